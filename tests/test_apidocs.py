"""`/docs` and `/redoc` work offline: every asset they load comes from this server."""

import re
from html.parser import HTMLParser

import httpx
import pytest

# What each kind of asset must be served as.
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".svg": ("image/svg+xml",),
    ".json": ("application/json",),
}
# A word each real file holds: not an empty file or an error page with the right type.
SIGNATURES = {
    "swagger-ui-bundle.js": "SwaggerUIBundle",
    "swagger-ui.css": ".swagger-ui",
    "redoc.standalone.js": "Redoc",
}


class References(HTMLParser):
    """Every URL a page makes the browser load: src, href, spec-url, and the url: of a script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls.extend(re.findall(r"""\burl\s*:\s*['"]([^'"]+)['"]""", data))


def page_references(client: httpx.Client, path: str) -> list[str]:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html"), answer.headers
    assert not re.search(r"(?i)\b(https?:)?//[a-z0-9]", answer.text), (
        f"{path} names another origin:\n{answer.text}"
    )
    parser = References()
    parser.feed(answer.text)
    return parser.urls


@pytest.mark.parametrize(
    ("path", "needed"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}),
        ("/redoc", {"redoc.standalone.js", "openapi.json"}),
    ],
)
def test_docs_page_loads_only_same_origin_assets(
    client: httpx.Client, path: str, needed: set[str]
) -> None:
    """Each URL the page loads is a path on this server that answers 200 with its type."""
    urls = page_references(client, path)
    names = {url.rsplit("/", 1)[-1] for url in urls}
    assert needed <= names, f"{path} loads {urls}, expected {needed}"
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{path}: {url} is not ours"
        answer = client.get(url)
        assert answer.status_code == 200, f"{path}: {url} answered {answer.status_code}"
        suffix = "." + url.rsplit(".", 1)[-1]
        kind = answer.headers["content-type"].split(";")[0].strip()
        assert kind in CONTENT_TYPES[suffix], f"{url} served as {kind}"
        signature = SIGNATURES.get(url.rsplit("/", 1)[-1])
        if signature:
            assert signature in answer.text, f"{url} does not look like the real file"


def test_swagger_oauth2_redirect_page(client: httpx.Client) -> None:
    """Swagger UI's OAuth2 redirect helper is served too, with nothing from elsewhere."""
    answer = client.get("/docs/oauth2-redirect")
    assert answer.status_code == 200
    assert "oauth2" in answer.text.lower()
    assert not re.search(r"(?i)<script[^>]+src=", answer.text)
