"""Long public-domain texts from Debian packages (see ../shared/docs/MODELS.md).

Jane Austen's novels come from r-cran-janeaustenr's R data file: a sequence of big-endian u32
lengths, each followed by a zlib stream holding one R XDR-serialized character vector (one
element per line of the novel). R itself is not needed.
"""
import struct
import zlib

AUSTEN_RDB = "/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"


def _read_character_vector(raw: bytes) -> list[str]:
    if raw[:2] != b"X\n":
        raise ValueError("not an XDR R serialization")
    pos = 2
    version = struct.unpack(">i", raw[pos:pos + 4])[0]
    pos += 12  # version, writer R version, minimal reader version
    if version == 3:
        n = struct.unpack(">i", raw[pos:pos + 4])[0]
        pos += 4 + n  # native encoding name
    flags, length = struct.unpack(">ii", raw[pos:pos + 8])
    pos += 8
    if flags & 0xFF != 16:  # STRSXP
        raise ValueError(f"expected a character vector, got SEXP type {flags & 0xFF}")
    lines = []
    for _ in range(length):
        _, n = struct.unpack(">ii", raw[pos:pos + 8])
        pos += 8
        if n < 0:
            lines.append("")
            continue
        lines.append(raw[pos:pos + n].decode("utf-8", errors="replace"))
        pos += n
    return lines


def austen_novels(path: str = AUSTEN_RDB) -> list[str]:
    """The novels as plain text, one string per novel, in the file's order."""
    data = open(path, "rb").read()
    novels = []
    pos = 0
    while pos + 4 <= len(data):
        expected = struct.unpack(">I", data[pos:pos + 4])[0]
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data[pos + 4:])
        pos = len(data) - len(inflater.unused_data)
        if len(raw) != expected:
            raise ValueError("corrupt R data block")
        lines = _read_character_vector(raw)
        if len(lines) > 1000:  # the novels; skip small index vectors
            novels.append("\n".join(lines))
    return novels


if __name__ == "__main__":
    import argparse
    import sys
    ap = argparse.ArgumentParser(description="Print an excerpt of an Austen novel (0 Emma, "
                                 "1 Mansfield Park, 2 Northanger Abbey, 3 Persuasion, "
                                 "4 Pride and Prejudice, 5 Sense and Sensibility).")
    ap.add_argument("--novel", type=int, default=4)
    ap.add_argument("--start", default="", help="begin at the first occurrence of this text")
    ap.add_argument("--chars", type=int, default=9000)
    a = ap.parse_args()
    text = austen_novels()[a.novel]
    text = text[max(0, text.find(a.start)):]
    sys.stdout.write(text[:a.chars])
