/* Chest X-ray label review form: one case at a time, answers kept in localStorage, CSV/JSON export. */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("form-data").textContent);
  var CASES = DATA.cases;
  var N = CASES.length;
  var STORE_KEY = "cxr-label-review/" + DATA.study;
  var QUESTIONS = ["agree", "quality", "difficulty"];
  var FORMAT = "cxr-reader-answers/1";
  var MAX_TICK_S = 2; // a sleeping computer must not add hours to a case

  var $ = function (id) { return document.getElementById(id); };
  var state = { reader_id: "", current: 0, active: 0, answers: {} };
  var storageOk = true;
  var started = false;

  // ---------------------------------------------------------------- storage
  function loadState() {
    var raw = null;
    try {
      raw = window.localStorage.getItem(STORE_KEY);
    } catch (e) {
      storageOk = false;
    }
    if (!raw) return;
    try {
      var saved = JSON.parse(raw);
      if (saved && typeof saved === "object") {
        if (typeof saved.reader_id === "string") state.reader_id = saved.reader_id;
        if (typeof saved.current === "number" && saved.current >= 0 && saved.current < N) state.current = saved.current;
        if (typeof saved.active === "number") state.active = Math.max(0, Math.min(2, saved.active));
        if (saved.answers && typeof saved.answers === "object") state.answers = saved.answers;
      }
    } catch (e) {
      showMessage("Saved answers could not be read; starting afresh.");
    }
  }

  function saveState() {
    if (!storageOk) return;
    try {
      window.localStorage.setItem(STORE_KEY, JSON.stringify(state));
    } catch (e) {
      storageOk = false;
      $("storage-warning").hidden = false;
    }
  }

  function answerOf(index) {
    var id = CASES[index].case_id;
    var a = state.answers[id];
    if (!a || typeof a !== "object") {
      a = { agree: null, quality: null, difficulty: null, seconds: 0, answered_at: null };
      state.answers[id] = a;
    }
    return a;
  }

  function isComplete(a) {
    return !!a && (a.agree === "yes" || a.agree === "no") && a.quality >= 1 && a.difficulty >= 1;
  }

  function isStarted(a) {
    return !!a && (a.agree != null || a.quality != null || a.difficulty != null);
  }

  function completeCount() {
    var k = 0;
    for (var i = 0; i < N; i++) if (isComplete(state.answers[CASES[i].case_id])) k++;
    return k;
  }

  // ---------------------------------------------------------------- timing
  var lastTick = performance.now();

  function tick() {
    var now = performance.now();
    var dt = Math.min((now - lastTick) / 1000, MAX_TICK_S);
    lastTick = now;
    if (!started || document.visibilityState !== "visible" || dt <= 0) return;
    var a = answerOf(state.current);
    a.seconds = (Number(a.seconds) || 0) + dt;
    saveState();
  }

  // ---------------------------------------------------------------- viewer
  var canvas = $("canvas");
  var ctx = canvas.getContext("2d");
  var buffer = document.createElement("canvas");
  var bctx = buffer.getContext("2d", { willReadFrequently: true });
  var gray = null; // Uint8ClampedArray of the current image's gray values
  var shownImage = null; // ImageData written with the window/level applied
  var requestedIndex = -1;
  var loadToken = 0;
  var view = { zoom: 1, panX: 0, panY: 0, window: 255, level: 128 };

  function resetView() {
    view.zoom = 1; view.panX = 0; view.panY = 0; view.window = 255; view.level = 128;
    $("window").value = String(view.window);
    $("level").value = String(view.level);
    applyWindow();
  }

  function loadImage(index) {
    var token = ++loadToken;
    requestedIndex = index;
    var img = new Image();
    img.onload = function () {
      if (token !== loadToken) return;
      buffer.width = img.naturalWidth;
      buffer.height = img.naturalHeight;
      bctx.drawImage(img, 0, 0);
      var data = bctx.getImageData(0, 0, buffer.width, buffer.height);
      gray = new Uint8ClampedArray(buffer.width * buffer.height);
      for (var p = 0, q = 0; q < gray.length; p += 4, q++) gray[q] = data.data[p];
      shownImage = data;
      resetView();
    };
    img.onerror = function () {
      if (token === loadToken) showMessage("This image could not be displayed.");
    };
    img.src = CASES[index].image;
  }

  function applyWindow() {
    if (!gray) { draw(); return; }
    var lo = view.level - view.window / 2;
    var scale = 255 / view.window;
    var lut = new Uint8ClampedArray(256);
    for (var v = 0; v < 256; v++) lut[v] = Math.round((v - lo) * scale);
    var d = shownImage.data;
    for (var p = 0, q = 0; q < gray.length; p += 4, q++) {
      var g = lut[gray[q]];
      d[p] = g; d[p + 1] = g; d[p + 2] = g; d[p + 3] = 255;
    }
    bctx.putImageData(shownImage, 0, 0);
    draw();
  }

  function fitScale() {
    if (!gray) return 1;
    return Math.min(canvas.width / buffer.width, canvas.height / buffer.height);
  }

  function draw() {
    var dpr = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    var h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    $("zoom-value").textContent = Math.round(view.zoom * 100) + "%";
    if (!gray) return;
    var s = fitScale() * view.zoom;
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.setTransform(s, 0, 0, s, w / 2 + view.panX * dpr - (buffer.width * s) / 2,
                     h / 2 + view.panY * dpr - (buffer.height * s) / 2);
    ctx.drawImage(buffer, 0, 0);
  }

  function zoomBy(factor, cx, cy) {
    var old = view.zoom;
    view.zoom = Math.max(0.5, Math.min(12, view.zoom * factor));
    if (cx !== undefined) { // keep the point under the cursor in place
      var rect = canvas.getBoundingClientRect();
      var dx = cx - rect.left - rect.width / 2 - view.panX;
      var dy = cy - rect.top - rect.height / 2 - view.panY;
      var k = view.zoom / old;
      view.panX -= dx * (k - 1);
      view.panY -= dy * (k - 1);
    }
    draw();
  }

  function setWindow(w, l) {
    view.window = Math.max(1, Math.min(510, Math.round(w)));
    view.level = Math.max(0, Math.min(255, Math.round(l)));
    $("window").value = String(view.window);
    $("level").value = String(view.level);
    applyWindow();
  }

  var drag = null;
  canvas.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, wl: e.shiftKey || e.button === 2, window: view.window, level: view.level,
             panX: view.panX, panY: view.panY };
    canvas.classList.add("dragging");
    if (canvas.setPointerCapture) canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (drag.wl) {
      setWindow(drag.window + dx, drag.level - dy);
    } else {
      view.panX = drag.panX + dx;
      view.panY = drag.panY + dy;
      draw();
    }
  });
  function endDrag() { drag = null; canvas.classList.remove("dragging"); }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("contextmenu", function (e) { e.preventDefault(); });
  canvas.addEventListener("dblclick", function () { view.zoom = 1; view.panX = 0; view.panY = 0; draw(); });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoomBy(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX, e.clientY);
  }, { passive: false });
  window.addEventListener("resize", draw);

  $("zoom-in").addEventListener("click", function () { zoomBy(1.25); });
  $("zoom-out").addEventListener("click", function () { zoomBy(1 / 1.25); });
  $("fit").addEventListener("click", function () { view.zoom = 1; view.panX = 0; view.panY = 0; draw(); });
  $("reset-view").addEventListener("click", resetView);
  $("window").addEventListener("input", function () { setWindow(Number(this.value), view.level); });
  $("level").addEventListener("input", function () { setWindow(view.window, Number(this.value)); });

  // ---------------------------------------------------------------- answering
  function answer(q, value) {
    var a = answerOf(state.current);
    a[q] = value;
    a.answered_at = new Date().toISOString();
    var next = -1;
    for (var k = 1; k <= 3; k++) {
      var cand = (QUESTIONS.indexOf(q) + k) % 3;
      if (a[QUESTIONS[cand]] == null) { next = cand; break; }
    }
    if (next >= 0) state.active = next;
    else if (q !== "agree") state.active = QUESTIONS.indexOf(q);
    saveState();
    render();
    if (isComplete(a) && completeCount() < N) showMessage("Case complete: press Enter or \u2192 for the next one.");
  }

  function rateActive(value) {
    var q = QUESTIONS[state.active];
    if (q === "agree") q = answerOf(state.current).quality == null ? "quality" : "difficulty";
    answer(q, value);
  }

  function go(index) {
    if (index < 0 || index >= N || index === state.current) return;
    tick(); // the time so far belongs to the case being left
    state.current = index;
    var a = answerOf(index);
    state.active = 0;
    for (var k = 0; k < 3; k++) if (a[QUESTIONS[k]] == null) { state.active = k; break; }
    saveState();
    showMessage("");
    render();
  }

  function nextUnanswered() {
    for (var k = 1; k <= N; k++) {
      var i = (state.current + k) % N;
      if (!isComplete(state.answers[CASES[i].case_id])) { go(i); return; }
    }
    showMessage("Every case is answered.");
  }

  Array.prototype.forEach.call(document.querySelectorAll(".choices button"), function (b) {
    b.addEventListener("click", function (e) {
      var q = b.getAttribute("data-q");
      var v = b.getAttribute("data-v");
      answer(q, q === "agree" ? v : Number(v));
      if (e.detail > 0) b.blur(); // mouse clicks leave the keyboard to the page
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("fieldset.question"), function (f, i) {
    f.addEventListener("pointerdown", function () { state.active = i; render(); });
  });
  $("prev").addEventListener("click", function () { go(state.current - 1); });
  $("next").addEventListener("click", function () { go(state.current + 1); });
  $("next-open").addEventListener("click", nextUnanswered);

  // ---------------------------------------------------------------- rendering
  var strip = $("strip");
  var stripButtons = [];
  CASES.forEach(function (c, i) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = String(i + 1);
    b.title = "case " + (i + 1);
    b.addEventListener("click", function () { go(i); });
    strip.appendChild(b);
    stripButtons.push(b);
  });

  function render() {
    var i = state.current;
    var c = CASES[i];
    var a = answerOf(i);
    $("progress").textContent = "case " + (i + 1) + " of " + N;
    var done = completeCount();
    $("complete-count").textContent = done + " of " + N + " answered";
    $("reader-label").textContent = "reader: " + state.reader_id;
    $("case-id").textContent = "Case " + c.case_id;
    var ul = $("labels");
    ul.textContent = "";
    c.labels.forEach(function (name) {
      var li = document.createElement("li");
      li.textContent = name;
      ul.appendChild(li);
    });
    QUESTIONS.forEach(function (q, k) {
      var f = $("q-" + q);
      f.classList.toggle("active", k === state.active);
      f.classList.toggle("answered", a[q] != null);
      Array.prototype.forEach.call(f.querySelectorAll("button"), function (b) {
        var v = b.getAttribute("data-v");
        var on = a[q] != null && String(a[q]) === v;
        b.setAttribute("aria-pressed", on ? "true" : "false");
      });
    });
    $("prev").disabled = i === 0;
    $("next").disabled = i === N - 1;
    stripButtons.forEach(function (b, k) {
      var ak = state.answers[CASES[k].case_id];
      b.className = (isComplete(ak) ? "complete" : isStarted(ak) ? "partial" : "") + (k === i ? " current" : "");
    });
    if (done === N) {
      showMessage("All " + N + " cases are answered. Export your answers (CSV or JSON) and send the file.", true);
    }
    if (requestedIndex !== i) loadImage(i);
  }

  function showMessage(text, good) {
    var m = $("message");
    m.textContent = text;
    m.classList.toggle("done", !!good);
  }

  // ---------------------------------------------------------------- export
  function rows() {
    tick();
    return CASES.map(function (c, i) {
      var a = state.answers[c.case_id] || {};
      return {
        form: DATA.form, study: DATA.study, reader_id: state.reader_id, case_id: c.case_id, position: i + 1,
        agree: a.agree == null ? "" : a.agree,
        quality: a.quality == null ? "" : a.quality,
        difficulty: a.difficulty == null ? "" : a.difficulty,
        seconds: Math.round((Number(a.seconds) || 0) * 10) / 10,
        answered_at: a.answered_at || ""
      };
    });
  }

  var COLUMNS = ["form", "study", "reader_id", "case_id", "position", "agree", "quality", "difficulty",
                 "seconds", "answered_at"];

  function csvField(v) {
    var s = String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function safeName(s) {
    return String(s).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 40) || "reader";
  }

  function download(text, type, ext) {
    var name = "answers-form-" + DATA.form + "-" + safeName(state.reader_id) + "." + ext;
    var blob = new Blob([text], { type: type });
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(url); link.remove(); }, 1000);
    var done = completeCount();
    $("export-status").textContent = "Saved " + name + " (" + done + " of " + N + " cases answered" +
      (done < N ? "; unanswered cases are exported empty" : "") + ").";
  }

  $("export-csv").addEventListener("click", function () {
    var lines = [COLUMNS.join(",")];
    rows().forEach(function (r) { lines.push(COLUMNS.map(function (k) { return csvField(r[k]); }).join(",")); });
    download(lines.join("\r\n") + "\r\n", "text/csv;charset=utf-8", "csv");
  });

  $("export-json").addEventListener("click", function () {
    var doc = { format: FORMAT, form: DATA.form, study: DATA.study, reader_id: state.reader_id,
                exported_at: new Date().toISOString(), answers: rows() };
    download(JSON.stringify(doc, null, 2) + "\n", "application/json", "json");
  });

  $("reset-form").addEventListener("click", function () {
    if (!window.confirm("Clear every answer of this form on this computer? Export first if you need them.")) return;
    state = { reader_id: "", current: 0, active: 0, answers: {} };
    try { window.localStorage.removeItem(STORE_KEY); } catch (e) { /* nothing kept anyway */ }
    started = false;
    requestedIndex = -1;
    showStart();
  });

  // ---------------------------------------------------------------- keyboard
  var DIGIT_CODES = { Digit1: 1, Digit2: 2, Digit3: 3, Digit4: 4, Digit5: 5,
                      Numpad1: 1, Numpad2: 2, Numpad3: 3, Numpad4: 4, Numpad5: 5 };

  document.addEventListener("keydown", function (e) {
    if (!started || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && t.tagName === "INPUT" && t.type !== "range") return;
    if (t && t.tagName === "INPUT" && /^Arrow/.test(e.key)) return; // sliders keep their arrows
    if (t && (t.tagName === "SUMMARY" || t.tagName === "BUTTON") && (e.key === "Enter" || e.key === " ")) return;
    var key = e.key;
    var digit = /^[1-5]$/.test(key) ? Number(key) : (DIGIT_CODES[e.code] && !/^[0-9+\-=]$/.test(key) ? DIGIT_CODES[e.code] : 0);
    var handled = true;
    if (key === "y" || key === "Y") answer("agree", "yes");
    else if (key === "n" || key === "N") answer("agree", "no");
    else if (digit) rateActive(digit);
    else if (key === "ArrowDown") { state.active = Math.min(2, state.active + 1); render(); }
    else if (key === "ArrowUp") { state.active = Math.max(0, state.active - 1); render(); }
    else if (key === "ArrowRight" || key === "Enter") go(state.current + 1);
    else if (key === "ArrowLeft") go(state.current - 1);
    else if (key === "u" || key === "U") nextUnanswered();
    else if (key === "+" || key === "=") zoomBy(1.25);
    else if (key === "-" || key === "_") zoomBy(1 / 1.25);
    else if (key === "0") { view.zoom = 1; view.panX = 0; view.panY = 0; draw(); }
    else if (key === "[") setWindow(view.window * 0.85, view.level);
    else if (key === "]") setWindow(view.window / 0.85, view.level);
    else if (key === ",") setWindow(view.window, view.level - 8);
    else if (key === ".") setWindow(view.window, view.level + 8);
    else if (key === "r" || key === "R") resetView();
    else if (key === "?") $("help").open = !$("help").open;
    else handled = false;
    if (handled) e.preventDefault();
  });

  // ---------------------------------------------------------------- start
  function showStart() {
    $("rate").hidden = true;
    $("start").hidden = false;
    $("progress").textContent = "";
    $("complete-count").textContent = "";
    $("reader-label").textContent = "";
    $("reader-id").value = state.reader_id;
    $("reader-id").focus();
  }

  function begin() {
    started = true;
    $("start").hidden = true;
    $("rate").hidden = false;
    lastTick = performance.now();
    render();
    draw();
  }

  $("start-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var id = $("reader-id").value.trim();
    if (!id) { $("reader-id").focus(); return; }
    state.reader_id = id;
    saveState();
    $("reader-id").blur();
    begin();
  });

  document.addEventListener("visibilitychange", function () { tick(); lastTick = performance.now(); saveState(); });
  window.addEventListener("pagehide", function () { tick(); saveState(); });
  setInterval(tick, 1000);

  document.title = DATA.title;
  $("form-name").textContent = "\u00b7 form " + DATA.form;
  $("start-count").textContent = String(N);
  loadState();
  if (!storageOk) $("storage-warning").hidden = false;
  if (state.reader_id) begin(); else showStart();
})();
