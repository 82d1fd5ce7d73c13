"""kvc serve against the official `openai` Python client, and against raw HTTP where a client
library would refuse to send what a hostile or broken client sends.

Every test talks to servers this file starts on 127.0.0.1 (port 0: the server picks a free
port and prints it). Loops are bounded in count and time. Run by CTest (tests/CMakeLists.txt):
    .venv-test/bin/python tests/server/test_openai_client.py KVC_BINARY MODEL
"""
import concurrent.futures
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import unittest

import openai

KVC, MODEL = sys.argv[1], sys.argv[2]
API_KEY = "test-key-123"


class Server:
    """A `kvc serve` process; stops it (SIGTERM) on exit and checks it exits 0."""

    def __init__(self, *extra, api_key=API_KEY):
        args = [KVC, "serve", "-m", MODEL, "--port", "0", "-t", "2", "--ctx", "2048"]
        if api_key:
            args += ["--api-key", api_key]
        self.proc = subprocess.Popen(args + list(extra), stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if "[kvc] ready" in line:
                break
        assert self.port, "server did not start:\n" + "".join(self.log)
        self.api_key = api_key

    def client(self, **kw):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1",
                             api_key=self.api_key or "none", max_retries=0, timeout=120, **kw)

    def raw(self, method, path, body=None, headers=None, auth=True):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        h = dict(headers or {})
        if auth and self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def metrics(self):
        status, data = self.raw("GET", "/metrics")
        assert status == 200
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                out[name] = float(value)
        return out

    def wait_idle(self, seconds=30):
        deadline = time.time() + seconds
        while time.time() < deadline:
            m = self.metrics()
            if m["kvc_requests_running"] == 0 and m["kvc_requests_waiting"] == 0:
                return m
            time.sleep(0.1)
        raise AssertionError(f"server not idle after {seconds} s: {m}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc.stderr.close()
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        code = self.stop()
        assert code == 0, f"server exited with {code}"


class OpenAIClientTest(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--kv-budget", "64", "--max-running", "32")

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, f"server exited with {code}"

    def test_models_and_health(self):
        models = self.server.client().models.list()
        self.assertEqual(len(models.data), 1)
        self.assertTrue(models.data[0].id.startswith("SmolLM2"))
        status, body = self.server.raw("GET", "/health", auth=False)
        self.assertEqual((status, json.loads(body)["status"]), (200, "ok"))

    def test_completion(self):
        c = self.server.client().completions.create(
            model=self.model(), prompt="The capital of France is", max_tokens=8, temperature=0)
        self.assertIn("Paris", c.choices[0].text)
        self.assertEqual(c.choices[0].finish_reason, "length")
        self.assertEqual(c.usage.completion_tokens, 8)
        self.assertGreater(c.usage.prompt_tokens, 3)

    def test_chat_with_compression_extension(self):
        c = self.server.client().chat.completions.create(
            model=self.model(), messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=40, temperature=0,
            extra_body={"kv_policy": "kvcompress", "max_cache_tokens": 16, "kv_details": True})
        self.assertTrue(c.choices[0].message.content)
        self.assertEqual(c.choices[0].message.role, "assistant")
        kv = c.model_extra["kv_compression"]
        self.assertTrue(kv["policy"].startswith("kvcompress"))
        self.assertNotIn("word spans", kv["policy"])  # the paper's method, as named
        self.assertGreaterEqual(kv["compressions"], 1)
        self.assertEqual(len(kv["retained_per_layer_head"]), 30)
        self.assertEqual(len(kv["retained_per_layer_head"][0]), 3)
        # A budget without a policy means "auto" (kvcompress with word spans), as does
        # kv_policy "auto"; with policy full it is an error.
        for extra in ({"max_cache_tokens": 32}, {"kv_policy": "auto", "max_cache_tokens": 32}):
            c = self.server.client().completions.create(
                model=self.model(), prompt="word " * 200, max_tokens=4, temperature=0,
                extra_body=extra)
            policy = c.model_extra["kv_compression"]["policy"]
            self.assertTrue(policy.startswith("kvcompress") and "word spans" in policy, policy)
            self.assertLess(c.model_extra["kv_compression"]["kvs_kept"], 90 * 100)
        with self.assertRaises(openai.BadRequestError):
            self.server.client().completions.create(
                model=self.model(), prompt="x", max_tokens=2,
                extra_body={"kv_policy": "full", "max_cache_tokens": 32})
        # marginal_error: the kvcompress rule of docs/design.md §3, reported in the policy;
        # any other policy refuses it.
        c = self.server.client().completions.create(
            model=self.model(), prompt="word " * 200, max_tokens=4, temperature=0,
            extra_body={"kv_policy": "auto", "max_cache_tokens": 32, "marginal_error": True})
        self.assertIn("marginal error", c.model_extra["kv_compression"]["policy"])
        with self.assertRaises(openai.BadRequestError) as e:
            self.server.client().completions.create(
                model=self.model(), prompt="x", max_tokens=2,
                extra_body={"kv_policy": "snapkv", "max_cache_tokens": 32, "marginal_error": True})
        self.assertEqual(e.exception.body["param"], "marginal_error")

    def test_streaming_matches_non_streaming(self):
        client = self.server.client()
        args = dict(model=self.model(), messages=[{"role": "user", "content": "Count to five."}],
                    max_tokens=24, temperature=0)
        whole = client.chat.completions.create(**args)
        pieces, finish, usage = [], None, None
        for chunk in client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **args):
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        self.assertEqual("".join(pieces), whole.choices[0].message.content)
        self.assertEqual(finish, whole.choices[0].finish_reason)
        self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model=self.model(), prompt="One, two, three,", max_tokens=10, temperature=0,
            stream=True))
        plain = client.completions.create(model=self.model(), prompt="One, two, three,",
                                          max_tokens=10, temperature=0).choices[0].text
        self.assertEqual(streamed, plain)

    def test_penalties_change_a_repetitive_greedy_continuation_and_are_range_checked(self):
        client = self.server.client()
        prompt = "1, 2, 3, 4, 5,"  # the continuation repeats the prompt's commas
        plain = client.completions.create(model=self.model(), prompt=prompt, max_tokens=8,
                                          temperature=0).choices[0].text
        penalized = client.completions.create(
            model=self.model(), prompt=prompt, max_tokens=8, temperature=0,
            frequency_penalty=2.0, presence_penalty=2.0,
            extra_body={"repeat_penalty": 1.5, "repeat_last_n": -1}).choices[0].text
        self.assertNotEqual(plain, penalized)
        for field, value in [("presence_penalty", 2.5), ("frequency_penalty", -3),
                             ("repeat_penalty", 0), ("repeat_last_n", -2)]:
            status, data = self.server.raw(
                "POST", "/v1/completions",
                body=json.dumps({"prompt": "hi", "max_tokens": 2, field: value}).encode(),
                headers={"Content-Type": "application/json"})
            self.assertEqual(status, 400, data)
            self.assertEqual(json.loads(data)["error"]["param"], field)

    def test_stop_strings(self):
        c = self.server.client().completions.create(
            model=self.model(), prompt="1, 2, 3, 4, 5,", max_tokens=30, temperature=0,
            stop=[" 8"])
        self.assertNotIn("8", c.choices[0].text)
        self.assertEqual(c.choices[0].finish_reason, "stop")

    def test_32_concurrent_clients_all_complete_and_free_every_block(self):
        client = self.server.client()

        def one(i):
            if i % 2:
                r = client.completions.create(model=self.model(), prompt=f"Number {i}: the",
                                              max_tokens=12, temperature=0.7, seed=i)
                return r.usage.completion_tokens
            n = 0
            for chunk in client.chat.completions.create(
                    model=self.model(), messages=[{"role": "user", "content": f"Tell me about {i}."}],
                    max_tokens=12, stream=True, stream_options={"include_usage": True}):
                if chunk.usage:
                    n = chunk.usage.completion_tokens
            return n

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            counts = list(pool.map(one, range(32)))
        self.assertEqual(len(counts), 32)
        self.assertTrue(all(1 <= n <= 12 for n in counts), counts)
        m = self.server.wait_idle()
        self.assertEqual(m["kvc_kv_blocks_used"], 0)
        self.assertGreater(m["kvc_engine_peak_decode_batch"], 4)

    def test_1000_malformed_bodies_get_4xx_and_the_server_keeps_serving(self):
        rng = random.Random(7)
        good = {"model": self.model(), "prompt": "hi", "max_tokens": 2}
        bad_values = [None, -1, 0, 1e30, "x", [], {}, True, [1, "a"], -1e9, 10**30, "\x00"]
        fields = ["max_tokens", "temperature", "top_p", "top_k", "seed", "stream", "stop",
                  "prompt", "model", "n", "kv_policy", "max_cache_tokens", "compression_rate",
                  "protected_window", "compress_once", "compress_chunk", "chunk_budget_factor", "messages",
                  "marginal_error", "tail_probe", "presence_penalty", "frequency_penalty",
                  "repeat_penalty", "repeat_last_n", "stream_options"]
        bodies = [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"prompt": "a"' * 50,
                  json.dumps({"model": "nope", "prompt": "x"}).encode(),
                  json.dumps({"prompt": ""}).encode(),
                  json.dumps({"prompt": "x", "max_tokens": 10**7}).encode(),
                  json.dumps({"prompt": "x", "kv_policy": "bogus"}).encode(),
                  json.dumps({"prompt": "word " * 3000}).encode()]
        while len(bodies) < 1000:
            body = dict(good)
            for _ in range(rng.randint(1, 3)):
                body[rng.choice(fields)] = rng.choice(bad_values)
            bodies.append(json.dumps(body).encode())
        statuses = {}
        for i, body in enumerate(bodies):
            path = "/v1/chat/completions" if i % 3 == 0 else "/v1/completions"
            status, data = self.server.raw("POST", path, body=body,
                                           headers={"Content-Type": "application/json"})
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 400:
                self.assertLess(status, 500, f"{body!r} -> {status} {data!r}")
                err = json.loads(data)["error"]
                self.assertTrue(err["message"])
                self.assertIn("type", err)
        # Random bodies are sometimes valid (a bad value for a field that accepts it); most
        # are not, and none may get a 5xx.
        self.assertGreater(sum(v for k, v in statuses.items() if 400 <= k < 500), 600, statuses)
        self.assertFalse([k for k in statuses if k >= 500 or k < 200], statuses)
        self.server.wait_idle()
        c = self.server.client().completions.create(model=self.model(), prompt="Hello",
                                                    max_tokens=3, temperature=0)
        self.assertEqual(c.usage.completion_tokens, 3)

    def test_wrong_or_missing_api_key(self):
        status, body = self.server.raw("GET", "/v1/models", auth=False)
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["error"]["code"], "invalid_api_key")
        status, _ = self.server.raw("GET", "/v1/models", auth=False,
                                    headers={"Authorization": "Bearer test-key-124"})
        self.assertEqual(status, 401)
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{self.server.port}/v1", api_key="wrong",
                          max_retries=0).models.list()

    def test_client_killed_mid_stream_cancels_its_request(self):
        before = self.server.metrics()["kvc_generation_tokens_total"]
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=30)
        body = json.dumps({"model": self.model(), "prompt": "Once upon a time", "max_tokens": 1500,
                           "stream": True, "ignore_eos": True}).encode()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(4096)
        sock.close()  # killed: the server must notice at its next write
        m = self.server.wait_idle(30)
        self.assertEqual(m["kvc_kv_blocks_used"], 0)
        self.assertLess(m["kvc_generation_tokens_total"] - before, 1500)

    @classmethod
    def model(cls):
        return cls.server.client().models.list().data[0].id


class PreemptionTest(unittest.TestCase):
    def test_tiny_budget_preempts_and_still_gives_unpressured_greedy_outputs(self):
        prompts = [f"Write a list of {i + 3} fruits, one per line:\n" for i in range(8)]
        # Unpressured: one request at a time on a roomy pool.
        with Server("--kv-budget", "64", api_key=None) as roomy:
            client = roomy.client()
            model = client.models.list().data[0].id
            expected = [client.completions.create(model=model, prompt=p, max_tokens=64,
                                                   temperature=0).choices[0].text for p in prompts]
        # 90 rows x 12 blocks: about two of these sequences at full length.
        with Server("--kv-blocks", str(90 * 12), api_key=None) as tight:
            client = tight.client()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                got = list(pool.map(lambda p: client.completions.create(
                    model=model, prompt=p, max_tokens=64, temperature=0), prompts))
            m = tight.wait_idle()
            self.assertGreater(m["kvc_preemptions_total"], 0)
            self.assertEqual(m["kvc_kv_blocks_used"], 0)
        for e, g in zip(expected, got):
            self.assertEqual(g.choices[0].text, e)
            self.assertEqual(g.usage.completion_tokens, 64)

    def test_compress_chunk_runs_a_prompt_longer_than_the_kv_pool(self):
        # 90 rows x 30 blocks hold 480 tokens per row; the prompt has about 1,500. Compressed
        # every 256 tokens to C=128 it needs (128 + 256) / 16 = 24 blocks per row at most.
        prompt = "The hills were green and the river was wide. " * 150
        with Server("--kv-blocks", str(90 * 30), api_key=None) as small:
            client = small.client()
            model = client.models.list().data[0].id
            with self.assertRaises(openai.BadRequestError) as e:
                client.completions.create(model=model, prompt=prompt, max_tokens=8,
                                          extra_body={"max_cache_tokens": 128})
            self.assertIn("compress_chunk", str(e.exception))
            r = client.completions.create(model=model, prompt=prompt, max_tokens=8,
                                          temperature=0,
                                          extra_body={"max_cache_tokens": 128,
                                                      "compress_chunk": 256})
            self.assertGreater(r.usage.prompt_tokens, 90 * 30 // 90 * 16)
            self.assertEqual(r.usage.completion_tokens, 8)
            # The tail probe runs within the same peak; without compress_chunk it is a 400.
            with self.assertRaises(openai.BadRequestError) as e:
                client.completions.create(model=model, prompt=prompt, max_tokens=8,
                                          extra_body={"max_cache_tokens": 128,
                                                      "tail_probe": True})
            self.assertIn("tail_probe", str(e.exception))
            # auto observes with 32 queries: a 16-token chunk cannot hold them (snapkv's 8 fit).
            with self.assertRaises(openai.BadRequestError) as e:
                client.completions.create(model=model, prompt="Hello", max_tokens=2,
                                          extra_body={"max_cache_tokens": 16,
                                                      "compress_chunk": 16})
            self.assertIn("compress_chunk", str(e.exception))
            self.assertIn("32", str(e.exception))
            probed = client.completions.create(model=model, prompt=prompt, max_tokens=8,
                                               temperature=0,
                                               extra_body={"max_cache_tokens": 128,
                                                           "compress_chunk": 256,
                                                           "tail_probe": True})
            self.assertEqual(probed.usage.prompt_tokens, r.usage.prompt_tokens)
            self.assertEqual(probed.usage.completion_tokens, 8)
            m = small.wait_idle()
            self.assertLessEqual(m["kvc_kv_blocks_peak"], 90 * 24)
            self.assertEqual(m["kvc_kv_blocks_used"], 0)


class ShutdownTest(unittest.TestCase):
    def test_sigterm_ends_streams_and_exits_zero(self):
        server = Server("--kv-budget", "32", api_key=None)
        client = server.client()
        model = client.models.list().data[0].id
        stream = client.completions.create(model=model, prompt="Once upon a time",
                                           max_tokens=1500, stream=True,
                                           extra_body={"ignore_eos": True})
        first = next(iter(stream))
        self.assertTrue(first.choices)
        server.proc.send_signal(signal.SIGTERM)
        finish = None
        try:
            for chunk in stream:
                finish = chunk.choices[0].finish_reason if chunk.choices else finish
        except (openai.APIConnectionError, http.client.HTTPException):
            pass
        self.assertEqual(server.proc.wait(timeout=60), 0)
        self.assertEqual(finish, "abort")
        server.stop()


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
