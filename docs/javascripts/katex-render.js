// Renders the math that pymdownx.arithmatex (generic mode) leaves in
// <span class="arithmatex">\(...\)</span> and <div class="arithmatex">\[...\]</div>
// with the vendored KaTeX. A TeX error is logged to the console, so the
// browser check (scripts/docs/check_site.py) fails on a broken equation.
(function () {
  function render() {
    document.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.getAttribute("data-katex") === "done") {
        return;
      }
      var display = el.tagName === "DIV";
      var tex = el.textContent.trim();
      tex = display
        ? tex.replace(/^\\\[/, "").replace(/\\\]$/, "")
        : tex.replace(/^\\\(/, "").replace(/\\\)$/, "");
      try {
        katex.render(tex, el, { displayMode: display, throwOnError: true });
        el.setAttribute("data-katex", "done");
      } catch (error) {
        console.error("KaTeX could not render " + JSON.stringify(tex) + ": " + error);
      }
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(render);
  } else {
    document.addEventListener("DOMContentLoaded", render);
  }
})();
