"""The chat page in a real browser: Debian's headless chromium, driven by Playwright for Python.

`.ci/run` installs chromium (apt-get) so these run in CI; where it cannot be installed they skip
and say so in the test summary. Playwright only drives the system browser (executable_path):
nothing is downloaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from serve_fixtures import build_run, live_server, slow_decoding

from model.checkpoint import load_model
from model.generate import generate
from tokenizer.encoding import load_tokenizer

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_server(build_run(tmp_path_factory.mktemp("page"))) as server:
        yield server


@pytest.fixture
def page(browser, live):
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live.url)
    page.wait_for_function("document.getElementById('model').textContent === 'tiny_chat'")
    yield page
    page.close()


def expected_reply(live, messages, max_tokens) -> str:
    model, _, tokenizer_path = load_model(live.run_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    prompt = tokenizer.prompt(messages)
    vocab = tokenizer.get_vocab_size()
    return tokenizer.decode(list(generate(model, prompt, max_tokens, 0.0, vocab_size=vocab)))


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")
    page.wait_for_selector("#send:not([disabled])")  # the reply is complete


def chat_requests(page) -> list[dict]:
    """Bodies of the chat requests the page sends from now on."""
    bodies = []

    def record(request):
        if request.url.endswith("/v1/chat/completions"):
            bodies.append(json.loads(request.post_data))

    page.on("request", record)
    return bodies


def start_a_long_reply(page, live, monkeypatch) -> None:
    """Send a message whose reply takes seconds (20 ms a token) and wait for its first text."""
    slow_decoding(monkeypatch, live)
    page.fill("#max-tokens", "200")
    page.fill("#input", "Go on forever")
    page.press("#input", "Enter")
    page.wait_for_function("document.querySelector('.message.assistant')?.textContent.length > 0")


def test_a_message_gets_a_streamed_reply_and_its_speed(page, live, tmp_path):
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "40")
    requests = chat_requests(page)
    send(page, "Hello fox, where do you live?")
    user = page.locator(".message.user")
    assistant = page.locator(".message.assistant")
    assert user.count() == 1 and user.text_content() == "Hello fox, where do you live?"
    messages = [{"role": "user", "content": "Hello fox, where do you live?"}]
    assert assistant.count() == 1
    assert assistant.text_content() == expected_reply(live, messages, 40)
    status = page.text_content("#status")
    assert "tokens/s" in status and float(status.split(" tokens/s")[0].split()[-1]) > 0
    assert requests[0]["stream"] is True and requests[0]["max_tokens"] == 40
    screenshot = tmp_path / "chat_page.png"
    page.screenshot(path=screenshot)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_keeps_the_conversation_until_new_chat(page):
    page.fill("#max-tokens", "8")
    requests = chat_requests(page)
    send(page, "first")
    send(page, "second")
    assert [m["role"] for m in requests[1]["messages"]] == ["user", "assistant", "user"]
    assert page.locator(".message").count() == 4
    page.click("#new-chat")
    assert page.locator(".message").count() == 0
    send(page, "third")
    assert [m["content"] for m in requests[2]["messages"]] == ["third"]


def test_model_output_is_shown_as_text_never_as_html(page):
    markup = '<img src=x onerror="window.pwned=1"><b>bold</b> & <script>window.pwned=2</script>'
    chunk = {"choices": [{"index": 0, "delta": {"content": markup}, "finish_reason": None}]}
    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    send(page, "say something in HTML")
    assert page.locator(".message.assistant").text_content() == markup
    assert page.locator("#conversation img, #conversation b, #conversation script").count() == 0
    assert page.evaluate("window.pwned") is None


def test_stop_ends_the_reply_and_the_server_stops_generating(page, live, monkeypatch):
    worker = live.served.worker
    start_a_long_reply(page, live, monkeypatch)
    (job,) = worker.running.values()
    page.click("#stop")
    page.wait_for_selector("#send:not([disabled])")
    assert "stopped" in page.text_content("#status")
    deadline = time.monotonic() + 10
    while worker.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not worker.running and job.stream.finish_reason is None  # cut off, not finished


def test_a_conversation_beyond_the_context_forgets_its_oldest_turns(page):
    """The server refuses a prompt beyond the context (400): the page then drops the oldest
    exchanges, greys them out, and goes on (it used to dead-end on the error)."""
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "40")
    requests = chat_requests(page)
    texts = [f"story {n}:" + " the fox and the bear walk far" * 6 for n in range(6)]
    for text in texts:
        send(page, text)
    assert page.locator(".message.error").count() == 0
    assert page.locator(".message.user").count() == len(texts)
    assert page.locator(".message.assistant").count() == len(texts)
    last = requests[-1]["messages"]
    assert last[-1]["content"] == texts[-1] and last[0]["content"] != texts[0]
    assert last[0]["role"] == "user"
    forgotten = page.locator(".message.forgotten").count()
    assert forgotten >= 2 and forgotten == 2 * len(texts) - len(last) - 1  # all but the reply
    assert "no longer fit" in page.text_content("#status")


def test_a_failed_turn_is_taken_back_and_its_text_returned(page):
    error = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    body = json.dumps(error)
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=500, content_type="application/json", body=body),
    )
    send(page, "lost words")
    assert page.locator(".message.error").text_content() == "boom"
    assert page.locator(".message.user").count() == 0  # not shown as if the model saw it
    assert page.input_value("#input") == "lost words"
    page.unroute("**/v1/chat/completions")
    page.fill("#temperature", "")  # empty: the server's default, not greedy
    requests = chat_requests(page)
    page.fill("#max-tokens", "4")
    send(page, "again")
    assert requests[0]["messages"] == [{"role": "user", "content": "again"}]
    assert "temperature" not in requests[0]


def test_enter_that_confirms_an_input_methods_text_does_not_send(page):
    page.fill("#input", "にほん")
    page.dispatch_event("#input", "keydown", {"key": "Enter", "isComposing": True})
    assert page.locator(".message.user").count() == 0 and page.input_value("#input") == "にほん"


def test_new_chat_during_a_reply_leaves_the_new_chat_clean(page, live, monkeypatch):
    start_a_long_reply(page, live, monkeypatch)
    page.click("#new-chat")
    page.wait_for_selector("#send:not([disabled])")
    assert page.locator(".message").count() == 0 and page.text_content("#status") == ""
    assert page.locator("#empty").is_visible()
