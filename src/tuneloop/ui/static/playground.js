// tuneloop ui: the playground's streamed answers. On "Ask both" the base's and the chosen model's
// answers are fetched at once from /playground/stream (the server's chat completions as
// server-sent events, relayed) and grow side by side as they are generated. Without fetch
// streams, or without script, the form posts and the server renders both answers.
(function () {
  "use strict";
  var form = document.getElementById("ask");
  if (!form || !window.fetch || !window.ReadableStream || !window.TextDecoder) { return; }
  var live = document.getElementById("live");
  function ask(model, out, done) {
    var body = new URLSearchParams({ question: form.question.value, model: model, max_tokens: form.max_tokens.value });
    var blank = out.parentNode.querySelector(".blank");
    out.textContent = "";
    blank.hidden = true;
    out.setAttribute("aria-busy", "true");
    function finish(note) {
      if (note) { out.textContent += note; }
      if (!out.textContent.trim()) {              // an answer of newlines would look like no answer
        blank.textContent = "(the answer is only whitespace: " + out.textContent.length + " characters)";
        blank.hidden = false;
      }
      out.removeAttribute("aria-busy");
      done();
    }
    fetch(form.dataset.stream, { method: "POST", body: body, credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { return r.text().then(function (t) { finish("⚠ " + t); }); }
      var reader = r.body.getReader(), decoder = new TextDecoder(), buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { return finish(); }
          buffer += decoder.decode(chunk.value, { stream: true });
          var events = buffer.split("\n\n");
          buffer = events.pop();
          events.forEach(function (ev) {
            ev.split("\n").forEach(function (line) {
              if (line.indexOf("data: ") !== 0) { return; }
              var data = line.slice(6);
              if (data === "[DONE]") { return; }
              var msg = JSON.parse(data);
              if (msg.error) { out.textContent += "⚠ " + msg.error.message; return; }
              var c = msg.choices && msg.choices[0];
              if (c && c.delta && c.delta.content) { out.textContent += c.delta.content; }
            });
          });
          return pump();
        });
      }
      return pump();
    }).catch(function (e) { finish("⚠ " + e); });
  }
  form.addEventListener("submit", function (ev) {
    if (!form.question.value.trim()) { return; }
    ev.preventDefault();
    var base = form.dataset.base, model = form.model.value, old = document.getElementById("answers");
    if (old) { old.remove(); }
    live.hidden = false;
    document.getElementById("live-tuned").textContent = (model === base ? "Base again: " : "Tuned: ") + model;
    var button = form.querySelector("button[type=submit]"), pending = 2;
    button.disabled = true;
    function done() { pending -= 1; if (!pending) { button.disabled = false; live.dataset.done = "yes"; } }
    live.dataset.done = "no";
    ask(base, document.getElementById("live-base-text"), done);
    ask(model, document.getElementById("live-tuned-text"), done);
  });
}());
