"""Opens every page of the built site in headless Chromium and checks it.

    mkdocs build --strict
    python scripts/docs/check_site.py                  # site/ -> site-screenshots/
    python scripts/docs/check_site.py --build --out /tmp/shots

The site is served from a local `http.server` on 127.0.0.1; every other host
is made unresolvable in the browser, so the check also proves that the pages
need no network (no CDN, no Google Fonts). For every page it checks that

- the page loads (HTTP 200, a non-empty `<h1>`), with no left-over
  directives (`:::`, `--8<--`, `<!-- render: ... -->`);
- every `<img>` is displayed: loaded (`complete`), `naturalWidth > 0` and
  laid out with a non-zero width;
- every equation was rendered by KaTeX, and nothing failed to render;
- the browser console has no errors (level SEVERE: script errors, failed
  loads, `console.error`), and no request left 127.0.0.1;
- no "Results pending" admonition is left (unless `--allow-pending`).

It also types into the search box of the home page and expects results,
and saves screenshots of the home and concepts pages (viewport and full
page) to `--out`. It exits with status 1 and a list of every failure, or 0.

Chromium and its WebDriver come from Debian (`chromium`,
`chromium-driver`): if `/usr/bin/chromium` or `/usr/bin/chromedriver` is
missing, the check installs them with apt-get (as root, or through sudo);
pass `--no-install` to fail instead. Selenium (`pip install selenium`) only
drives them: it is pointed at those two binaries and never downloads a
browser.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_PAGES = {"home": "", "concepts": "concepts/"}
LEFTOVERS = (":::", "--8<--", "<!-- render:", "<!-- figure:")

PAGE_STATE_JS = r"""
const images = Array.from(document.images).map((img) => ({
  src: img.getAttribute("src"),
  complete: img.complete,
  naturalWidth: img.naturalWidth,
  width: img.getBoundingClientRect().width,
}));
const article = document.querySelector("article") || document.body;
const h1 = article.querySelector("h1");
return {
  title: document.title,
  h1: h1 ? h1.textContent.trim() : "",
  text: article.innerText,
  images: images,
  math: document.querySelectorAll(".arithmatex").length,
  mathRendered: document.querySelectorAll('.arithmatex[data-katex="done"]').length,
  katexErrors: document.querySelectorAll(".katex-error").length,
  pending: Array.from(document.querySelectorAll(".admonition.pending")).map(
    (el) => el.innerText.replace(/\s+/g, " ").trim()),
};
"""

READY_JS = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 15000;
(function poll() {
  const imagesDone = Array.from(document.images).every((img) => img.complete);
  const mathDone = Array.from(document.querySelectorAll(".arithmatex")).every(
    (el) => el.getAttribute("data-katex") === "done");
  if ((document.readyState === "complete" && imagesDone && mathDone)
      || Date.now() > deadline) {
    document.fonts.ready.then(() => done(true));
  } else {
    setTimeout(poll, 50);
  }
})();
"""


def log(message: str) -> None:
    print(message, flush=True)


def ensure_browser(install: bool) -> float:
    """Installs Debian's chromium and chromium-driver if missing; returns seconds."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return 0.0
    if not install:
        raise SystemExit(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: "
            "apt-get install -y chromium chromium-driver (or drop --no-install)"
        )
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    if prefix and not shutil.which("sudo"):
        raise SystemExit("Installing chromium needs root or sudo")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("installing chromium and chromium-driver with apt-get ...")
    start = time.perf_counter()
    subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
    install_command = [
        *prefix,
        "apt-get",
        "install",
        # Waits for another apt or dpkg run to finish instead of failing.
        "-o",
        "DPkg::Lock::Timeout=600",
        "-y",
        "-qq",
        "chromium",
        "chromium-driver",
    ]
    if subprocess.run(install_command, env=env, stdout=subprocess.DEVNULL).returncode:
        # A machine whose earlier dpkg run was interrupted refuses every
        # install until dpkg finishes configuring; apt-get's own message asks
        # for this command, after which the install is tried once more.
        log("apt-get install failed; finishing dpkg's configuration and retrying")
        subprocess.run(
            [*prefix, "dpkg", "--configure", "-a"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run([*prefix, "apt-get", "install", "-f", "-y", "-qq"], env=env)
        subprocess.run(install_command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    log(f"installed chromium in {seconds:.0f} s")
    return seconds


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def page_paths(site: Path) -> list[str]:
    """URL paths of every page of the site, home first."""
    paths = []
    for index in sorted(site.rglob("index.html")):
        relative = index.parent.relative_to(site).as_posix()
        if relative.startswith(("assets", "javascripts", "stylesheets", "search")):
            continue
        paths.append("" if relative == "." else relative + "/")
    return sorted(paths, key=lambda p: (p != "", p))


def make_driver(user_data_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data_dir}",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        # Offline: every host but the local server fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability(
        "goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"}
    )
    service = Service(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def external_requests(driver, base_host: str) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        url = message["params"]["request"]["url"]
        parsed = urlparse(url)
        if (
            parsed.scheme in ("http", "https", "ws", "wss")
            and parsed.hostname != base_host
        ):
            urls.append(url)
    return urls


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def check_page(
    driver, base: str, path: str, allow_pending: bool
) -> tuple[list[str], dict]:
    url = base + path
    name = "/" + path
    problems = []
    status = http_status(url)
    if status != 200:
        return [f"{name}: HTTP {status}"], {}
    driver.get(url)
    driver.execute_async_script(READY_JS)
    state = driver.execute_script(PAGE_STATE_JS)
    if not state["h1"]:
        problems.append(f"{name}: no <h1>: the page did not render")
    for leftover in LEFTOVERS:
        if leftover in state["text"]:
            problems.append(f"{name}: unprocessed `{leftover}` in the page text")
    for image in state["images"]:
        if not (image["complete"] and image["naturalWidth"] > 0 and image["width"] > 0):
            problems.append(
                f"{name}: image not displayed: {image['src']} (complete="
                f"{image['complete']}, naturalWidth={image['naturalWidth']}, "
                f"width={image['width']:.0f})"
            )
    if state["mathRendered"] != state["math"] or state["katexErrors"]:
        problems.append(
            f"{name}: {state['math'] - state['mathRendered']} of {state['math']} "
            f"equations not rendered, {state['katexErrors']} KaTeX errors"
        )
    if state["pending"] and not allow_pending:
        for text in state["pending"]:
            problems.append(f"{name}: {text}")
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"{name}: console error: {entry['message']}")
    host = urlparse(base).hostname
    for request in external_requests(driver, host):
        problems.append(f"{name}: request to another host: {request}")
    summary = {
        "title": state["title"],
        "images": len(state["images"]),
        "equations": state["math"],
        "pending": len(state["pending"]),
    }
    return problems, summary


def check_search(driver, base: str) -> list[str]:
    """Types into the search box of the home page and waits for results."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base)
    driver.execute_async_script(READY_JS)
    try:
        box = driver.find_element(By.CSS_SELECTOR, "input.md-search__input")
        if not box.is_displayed():  # a narrow window: open the search overlay
            driver.find_element(By.CSS_SELECTOR, "label[for='__search']").click()
        box.click()
        box.send_keys("routing")
        WebDriverWait(driver, 15).until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, ".md-search-result__item")
            )
        )
    except Exception as error:  # noqa: BLE001  (any failure is a finding)
        return [
            f"search: typing 'routing' on the home page gave no results ({error!r})"
        ]
    problems = [
        f"search: console error: {entry['message']}"
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
    ]
    driver.find_element(By.CSS_SELECTOR, "input.md-search__input").clear()
    return problems


def screenshots(driver, base: str, out: Path, pages: dict[str, str]) -> list[Path]:
    saved = []
    for name, path in pages.items():
        driver.get(base + path)
        driver.execute_async_script(READY_JS)
        driver.execute_script("window.scrollTo(0, 0)")
        viewport = out / f"{name}.png"
        driver.save_screenshot(str(viewport))
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        full = out / f"{name}-full.png"
        full.write_bytes(base64.b64decode(shot["data"]))
        saved += [viewport, full]
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--site", type=Path, default=ROOT / "site", help="the built site"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "site-screenshots")
    parser.add_argument(
        "--build", action="store_true", help="run mkdocs build --strict first"
    )
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get install"
    )
    parser.add_argument(
        "--allow-pending", action="store_true", help="accept 'Results pending' notes"
    )
    parser.add_argument(
        "--all-screenshots", action="store_true", help="screenshot every page, not two"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download

    install_seconds = ensure_browser(install=not args.no_install)
    try:
        import selenium  # noqa: F401
    except ImportError:
        log("selenium is missing: pip install selenium")
        return 1
    if args.build:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mkdocs",
                "build",
                "--strict",
                "--site-dir",
                str(args.site),
            ],
            check=True,
            cwd=ROOT,
        )
    if not (args.site / "index.html").exists():
        log(
            f"No built site at {args.site}: run `mkdocs build --strict` (or pass --build)"
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    server, base = serve(args.site)
    paths = page_paths(args.site)
    problems: list[str] = []
    pages: dict[str, dict] = {}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="check-site-chromium-") as user_data_dir:
        driver = make_driver(user_data_dir)
        try:
            browser_started = time.perf_counter()
            for path in paths:
                page_problems, summary = check_page(
                    driver, base, path, args.allow_pending
                )
                problems += page_problems
                pages["/" + path] = summary
                mark = "ok  " if not page_problems else "FAIL"
                log(
                    f"{mark} /{path:<28} {summary.get('images', 0)} images, "
                    f"{summary.get('equations', 0)} equations"
                )
            problems += check_search(driver, base)
            shot_pages = dict(SCREENSHOT_PAGES)
            if args.all_screenshots:
                shot_pages.update(
                    {p.strip("/").replace("/", "-"): p for p in paths if p}
                )
            saved = screenshots(driver, base, args.out, shot_pages)
            browser_seconds = time.perf_counter() - browser_started
        finally:
            driver.quit()
            server.shutdown()

    total_seconds = time.perf_counter() - started
    report = {
        "pages": pages,
        "problems": problems,
        "screenshots": [str(p) for p in saved],
        "seconds": {
            "install_chromium": round(install_seconds, 1),
            "browser_checks": round(browser_seconds, 1),
            "total": round(total_seconds, 1),
        },
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"screenshots: {', '.join(str(p) for p in saved)}")
    log(
        f"{len(paths)} pages checked in {total_seconds:.0f} s "
        f"(chromium install {install_seconds:.0f} s, browser {browser_seconds:.0f} s)"
    )
    if problems:
        log(f"\n{len(problems)} problem(s):")
        for problem in problems:
            log(f"  - {problem}")
        return 1
    log("all pages passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
