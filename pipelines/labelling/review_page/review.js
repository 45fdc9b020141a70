// robocar label review: the page's behaviour. Plain JavaScript, no build step, no library; it speaks only
// the server's JSON API (pipelines/labelling/review.py). Every decision is POSTed at once and the page says
// "saved" only once the server has answered; a refusal or a lost connection is shown, never swallowed.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  // One colour per class id (cycled): distinct on photos, white text readable on each.
  const COLOURS = ["#d81b60", "#1e88e5", "#43a047", "#8e24aa", "#f4511e", "#00897b", "#6d4c41", "#3949ab", "#c0ca33"];
  const MIN_BOX_SCREEN_PX = 6; // a smaller drag is a click on empty space, not a box
  const HANDLE_SCREEN_PX = 10;
  const LABEL_SCREEN_PX = 13;

  const page = {
    info: null, // GET /api/state
    index: 0,
    record: null, // GET /api/records/<index>
    boxes: [], // detection: the boxes as shown, in image pixels
    selected: -1,
    drawClass: 0,
    gesture: null,
    showing: 0, // which show() call is current (a fast key press may start another)
    wanted: 0, // the record being shown or asked for: where ←/→ count from while one is loading
    saving: Promise.resolve(), // decisions are POSTed one after another, in the order made
  };

  // ------------------------------------------------------------------ talking to the server
  async function api(path, options) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      throw new Error(`the review server does not answer (${error.message}); is \`robocar label review\` still running?`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
    return body;
  }

  function setStatus(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
    if (message) setStatus("error", "not saved");
  }

  function post(decision, { advance }) {
    const index = decision.index;
    setStatus("saving", "saving…");
    page.saving = page.saving.then(async () => {
      try {
        const answer = await api("/api/decision", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(decision),
        });
        showError("");
        page.info.decided = answer.decided;
        page.info.next = answer.next;
        updateProgress();
        if (page.record && page.record.index === index) {
          page.record.decision = decision;
          renderDecision();
        }
        setStatus("saved", `saved: record ${index + 1} ${describe(decision)}`);
        if (advance && page.index === index) await goOn(answer);
      } catch (error) {
        showError(`Record ${index + 1} was not saved: ${error.message}`);
      }
    });
    return page.saving;
  }

  // ------------------------------------------------------------------ records
  async function start() {
    try {
      page.info = await api("/api/state");
    } catch (error) {
      showError(error.message);
      return;
    }
    document.body.dataset.kind = page.info.kind;
    buildClassButtons();
    updateProgress();
    $("overlay").hidden = page.info.kind !== "detection";
    $("boxes-section").hidden = page.info.kind !== "detection";
    await show(page.info.next === null ? 0 : page.info.next); // resume at the first undecided record
  }

  async function show(index) {
    if (index < 0 || index >= page.info.total) return;
    const call = ++page.showing;
    page.wanted = index;
    let record;
    try {
      record = await api(`/api/records/${index}`);
    } catch (error) {
      page.wanted = page.index;
      showError(error.message);
      return;
    }
    if (call !== page.showing) return; // another record was asked for meanwhile
    page.index = index;
    page.record = record;
    page.selected = -1;
    page.gesture = null;
    page.boxes = record.prelabel.boxes ? shownBoxes(record) : [];
    $("reason").value = record.decision && record.decision.reason ? record.decision.reason : "";
    const name = record.source_ref.split("/").pop();
    const photo = $("photo");
    photo.alt = `Image ${index + 1} of ${page.info.total}: ${name}`;
    photo.src = record.image_url;
    $("caption").textContent = record.source_ref;
    $("position").textContent = `${index + 1} / ${page.info.total}`;
    $("previous").disabled = index === 0;
    $("next").disabled = index === page.info.total - 1;
    document.body.dataset.index = String(index);
    renderAll();
  }

  function shownBoxes(record) {
    const decided = record.decision && record.decision.action === "correct" ? record.decision.boxes : null;
    return (decided || record.prelabel.boxes).map((b) => ({
      class: b.class, left: b.left, top: b.top, width: b.width, height: b.height,
      confidence: decided ? null : b.confidence,
    }));
  }

  async function goOn(answer) {
    if (page.index + 1 < page.info.total) return show(page.index + 1);
    if (answer.next !== null) return show(answer.next);
    setStatus("saved", `saved; all ${page.info.total} records decided`);
  }

  // ------------------------------------------------------------------ decisions
  function describe(decision) {
    if (decision.action === "accept") return "accepted";
    if (decision.action === "reject") return decision.reason ? `rejected (${decision.reason})` : "rejected";
    if (decision.class !== undefined) return `corrected to ${decision.class}`;
    return `corrected: ${decision.boxes.length} box${decision.boxes.length === 1 ? "" : "es"}`;
  }

  function accept() {
    if (!page.record) return;
    if (page.info.kind === "detection" && boxesChanged()) {
      return post({ index: page.index, action: "correct", boxes: plainBoxes() }, { advance: true });
    }
    return post({ index: page.index, action: "accept" }, { advance: true });
  }

  function reject() {
    if (!page.record) return;
    const decision = { index: page.index, action: "reject" };
    const reason = $("reason").value.trim();
    if (reason) decision.reason = reason;
    return post(decision, { advance: true });
  }

  function chooseClass(classIndex) {
    if (!page.record || classIndex >= page.info.classes.length) return;
    const name = page.info.classes[classIndex];
    if (page.info.kind === "classification") {
      return post({ index: page.index, action: "correct", class: name }, { advance: true });
    }
    page.drawClass = classIndex;
    if (page.selected >= 0) {
      page.boxes[page.selected].class = name;
      page.boxes[page.selected].confidence = null;
      saveBoxes();
    }
    renderAll();
  }

  function plainBoxes() {
    return page.boxes.map((b) => ({ class: b.class, left: b.left, top: b.top, width: b.width, height: b.height }));
  }

  function boxesChanged() {
    const original = page.record.prelabel.boxes.map((b) => [b.class, b.left, b.top, b.width, b.height].join());
    const now = page.boxes.map((b) => [b.class, b.left, b.top, b.width, b.height].join());
    return original.join("|") !== now.join("|");
  }

  function saveBoxes() {
    // Each finished edit is a correction saved at once: a review stopped mid-record loses nothing.
    return post({ index: page.index, action: "correct", boxes: plainBoxes() }, { advance: false });
  }

  function deleteSelected() {
    if (page.selected < 0) return;
    page.boxes.splice(page.selected, 1);
    page.selected = -1;
    saveBoxes();
    renderAll();
  }

  // ------------------------------------------------------------------ drawing
  function renderAll() {
    renderPrelabel();
    renderDecision();
    renderClassButtons();
    renderBoxes();
    layout();
  }

  function updateProgress() {
    const { decided, total } = page.info;
    $("progress-text").textContent = `${decided} of ${total} decided`;
    $("progress-bar").max = total;
    $("progress-bar").value = decided;
  }

  function renderPrelabel() {
    const pre = page.record.prelabel;
    if (pre.boxes === undefined) {
      $("prelabel").textContent = `${pre.class} (confidence ${formatConfidence(pre.confidence)})`;
      return;
    }
    const boxes = pre.boxes.map((b) => `${b.class} ${formatConfidence(b.confidence)}`);
    $("prelabel").textContent = boxes.length ? `${boxes.length} box${boxes.length === 1 ? "" : "es"}: ${boxes.join(", ")}` : "no box found";
  }

  function renderDecision() {
    const decision = page.record.decision;
    $("decision").dataset.action = decision ? decision.action : "";
    $("decision").textContent = decision ? `Decided: ${describe(decision)}` : "Not decided yet";
    const edited = page.info.kind === "detection" && boxesChanged();
    $("accept").firstChild.textContent = edited ? "Keep these boxes " : "Accept ";
  }

  function formatConfidence(value) {
    return typeof value === "number" ? value.toFixed(2) : "–";
  }

  function buildClassButtons() {
    const holder = $("classes");
    holder.replaceChildren();
    page.info.classes.forEach((name, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.class = name;
      button.setAttribute("aria-pressed", "false");
      if (i < 9) {
        const key = document.createElement("kbd");
        key.textContent = String(i + 1);
        button.append(key);
        button.setAttribute("aria-keyshortcuts", String(i + 1));
      }
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLOURS[i % COLOURS.length];
      swatch.setAttribute("aria-hidden", "true");
      const label = document.createElement("span");
      label.textContent = name;
      button.append(swatch, label);
      button.addEventListener("click", () => chooseClass(i));
      holder.append(button);
    });
  }

  function renderClassButtons() {
    const pre = page.record.prelabel;
    const decision = page.record.decision;
    let pressed = null;
    if (page.info.kind === "classification") {
      if (decision && decision.action === "correct") pressed = decision.class;
      else if (decision && decision.action === "accept") pressed = pre.class;
      $("class-hint").textContent = "A class button (or its number key) corrects the pre-label to that class.";
    } else {
      pressed = page.selected >= 0 ? page.boxes[page.selected].class : page.info.classes[page.drawClass];
      $("class-hint").textContent = page.selected >= 0
        ? "A class button (or number key) changes the selected box's class."
        : `Drag on the image to draw a new ${page.info.classes[page.drawClass]} box.`;
    }
    for (const button of $("classes").children) {
      button.setAttribute("aria-pressed", String(button.dataset.class === pressed));
      const marked = button.querySelector(".pre");
      if (marked) marked.remove();
      if (pre.class === button.dataset.class) {
        const tag = document.createElement("span");
        tag.className = "pre";
        tag.textContent = "pre-label";
        button.append(tag);
      }
    }
  }

  function layout() {
    // Fit the image (and the boxes' layer, which has its size) into the space left beside the panel.
    const photo = $("photo");
    if (!page.record || !page.record.width) {
      photo.style.width = photo.style.height = photo.style.maxWidth = ""; // one the server cannot size
      return;
    }
    photo.style.maxWidth = "none"; // sized here, both sides: a max-width would squeeze one only
    const stage = document.querySelector(".stage");
    const top = stage.getBoundingClientRect().top + window.scrollY;
    const room = Math.max(160, window.innerHeight - top - 48);
    const scale = Math.min(stage.clientWidth / page.record.width, room / page.record.height, 8);
    photo.style.width = `${Math.round(page.record.width * scale)}px`;
    photo.style.height = `${Math.round(page.record.height * scale)}px`;
    renderBoxes();
  }

  function pixelsPerScreenPixel() {
    const shown = $("photo").getBoundingClientRect().width;
    return shown > 0 && page.record.width ? page.record.width / shown : 1;
  }

  function renderBoxes() {
    const svg = $("overlay");
    if (page.info.kind !== "detection" || !page.record) return;
    const { width, height } = page.record;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    const unit = pixelsPerScreenPixel();
    page.boxes.forEach((box, i) => svg.append(boxElement(box, i, unit)));
    if (page.gesture && page.gesture.kind === "draw" && page.gesture.box) {
      const b = page.gesture.box;
      svg.append(element("rect", { class: "drawing", x: b.left, y: b.top, width: b.width, height: b.height, "vector-effect": "non-scaling-stroke" }));
    }
    renderBoxList();
  }

  function boxElement(box, i, unit) {
    const colour = COLOURS[Math.max(0, page.info.classes.indexOf(box.class)) % COLOURS.length];
    const group = element("g", { class: i === page.selected ? "box selected" : "box", "data-box": i });
    group.append(element("rect", {
      class: "outline", "data-box": i, x: box.left, y: box.top, width: box.width, height: box.height,
      stroke: colour, "vector-effect": "non-scaling-stroke",
    }));
    const text = box.confidence === null ? box.class : `${box.class} ${formatConfidence(box.confidence)}`;
    const size = LABEL_SCREEN_PX * unit;
    const tagHeight = size * 1.35;
    const tagTop = box.top >= tagHeight ? box.top - tagHeight : box.top;
    group.append(element("rect", {
      class: "tag", "data-box": i, x: box.left, y: tagTop, width: (text.length * 0.62 + 0.8) * size, height: tagHeight, fill: colour,
    }));
    const label = element("text", { x: box.left + 0.4 * size, y: tagTop + size * 1.02, "font-size": size });
    label.textContent = text;
    group.append(label);
    if (i === page.selected) {
      const h = HANDLE_SCREEN_PX * unit;
      const corners = { nw: [box.left, box.top], ne: [box.left + box.width, box.top], sw: [box.left, box.top + box.height], se: [box.left + box.width, box.top + box.height] };
      for (const [corner, [x, y]] of Object.entries(corners)) {
        group.append(element("rect", { class: "handle", "data-box": i, "data-corner": corner, x: x - h / 2, y: y - h / 2, width: h, height: h, "vector-effect": "non-scaling-stroke" }));
      }
    }
    return group;
  }

  function renderBoxList() {
    const list = $("box-list");
    list.replaceChildren();
    page.boxes.forEach((box, i) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-pressed", String(i === page.selected));
      const confidence = box.confidence === null ? "" : ` ${formatConfidence(box.confidence)}`;
      const [x, y, w, h] = [box.left, box.top, box.width, box.height].map(Math.round);
      button.textContent = `${box.class}${confidence} at ${x},${y} ${w}×${h}`;
      button.addEventListener("click", () => select(i === page.selected ? -1 : i));
      item.append(button);
      list.append(item);
    });
    $("delete-box").disabled = page.selected < 0;
  }

  function element(name, attributes) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    return node;
  }

  function select(i) {
    page.selected = i;
    if (i >= 0) page.drawClass = Math.max(0, page.info.classes.indexOf(page.boxes[i].class));
    renderAll();
  }

  // ------------------------------------------------------------------ dragging (detection)
  function imagePoint(event) {
    const svg = $("overlay");
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const p = point.matrixTransform(svg.getScreenCTM().inverse());
    return { x: clamp(p.x, 0, page.record.width), y: clamp(p.y, 0, page.record.height) };
  }

  function clamp(value, low, high) {
    return Math.min(high, Math.max(low, value));
  }

  function onPointerDown(event) {
    if (event.button !== 0 || !page.record) return;
    const target = event.target;
    const start = imagePoint(event);
    const boxIndex = target.dataset && target.dataset.box !== undefined ? Number(target.dataset.box) : -1;
    if (target.dataset && target.dataset.corner) {
      page.gesture = { kind: "resize", index: boxIndex, corner: target.dataset.corner, start, original: { ...page.boxes[boxIndex] } };
    } else if (boxIndex >= 0) {
      page.selected = boxIndex;
      page.gesture = { kind: "move", index: boxIndex, start, original: { ...page.boxes[boxIndex] } };
      renderAll();
    } else {
      page.selected = -1;
      page.gesture = { kind: "draw", start, box: null, screen: { x: event.clientX, y: event.clientY } };
      renderAll();
    }
    $("overlay").setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  function onPointerMove(event) {
    const gesture = page.gesture;
    if (!gesture) return;
    const p = imagePoint(event);
    const dx = p.x - gesture.start.x;
    const dy = p.y - gesture.start.y;
    if (gesture.kind === "draw") {
      gesture.box = spanning(gesture.start, p);
    } else if (gesture.kind === "move") {
      const o = gesture.original;
      Object.assign(page.boxes[gesture.index], {
        left: clamp(o.left + dx, 0, page.record.width - o.width),
        top: clamp(o.top + dy, 0, page.record.height - o.height),
      });
    } else {
      const o = gesture.original;
      const fixed = {
        x: gesture.corner.includes("w") ? o.left + o.width : o.left,
        y: gesture.corner.includes("n") ? o.top + o.height : o.top,
      };
      Object.assign(page.boxes[gesture.index], spanning(fixed, p));
    }
    gesture.moved = true;
    renderBoxes();
  }

  function onPointerUp(event) {
    const gesture = page.gesture;
    page.gesture = null;
    if (!gesture || !gesture.moved) return renderAll();
    if (gesture.kind === "draw") {
      const big = Math.abs(event.clientX - gesture.screen.x) >= MIN_BOX_SCREEN_PX && Math.abs(event.clientY - gesture.screen.y) >= MIN_BOX_SCREEN_PX;
      if (!big || !gesture.box) return renderAll();
      page.boxes.push({ class: page.info.classes[page.drawClass], ...whole(gesture.box), confidence: null });
      page.selected = page.boxes.length - 1;
    } else {
      const box = page.boxes[gesture.index];
      Object.assign(box, whole(box), { confidence: null });
    }
    saveBoxes();
    renderAll();
  }

  function spanning(a, b) {
    return { left: Math.min(a.x, b.x), top: Math.min(a.y, b.y), width: Math.abs(a.x - b.x), height: Math.abs(a.y - b.y) };
  }

  function whole(box) {
    // Ground Truth's boxes are whole pixels inside the image; the server would round the same way.
    const left = clamp(Math.round(box.left), 0, page.record.width - 1);
    const top = clamp(Math.round(box.top), 0, page.record.height - 1);
    const right = clamp(Math.round(box.left + box.width), left + 1, page.record.width);
    const bottom = clamp(Math.round(box.top + box.height), top + 1, page.record.height);
    return { left, top, width: right - left, height: bottom - top };
  }

  // ------------------------------------------------------------------ keys
  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if ($("help").open) return; // the dialog handles its own keys (Esc closes it)
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) {
      if (event.key === "Enter" && target.id === "reason") {
        event.preventDefault();
        reject();
      }
      return;
    }
    const onButton = target instanceof HTMLButtonElement;
    const key = event.key;
    if ((key === "Enter" || key === " ") && onButton) return; // the focused button's own action
    const handled = {
      Enter: accept, a: accept, x: reject, "?": openHelp,
      ArrowLeft: () => step(-1), k: () => step(-1),
      ArrowRight: () => step(1), j: () => step(1),
      Delete: deleteSelected, Backspace: deleteSelected, Escape: () => select(-1),
    }[key];
    if (handled) {
      event.preventDefault();
      handled();
    } else if (/^[1-9]$/.test(key)) {
      event.preventDefault();
      chooseClass(Number(key) - 1);
    }
  }

  function step(delta) {
    return show(page.wanted + delta);
  }

  function openHelp() {
    $("help").showModal();
  }

  function resetBoxes() {
    page.boxes = page.record.prelabel.boxes.map((b) => ({ ...b }));
    page.selected = -1;
    post({ index: page.index, action: "accept" }, { advance: false });
    renderAll();
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("keydown", onKey);
  $("accept").addEventListener("click", accept);
  $("reject").addEventListener("click", reject);
  $("previous").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("help-button").addEventListener("click", openHelp);
  $("delete-box").addEventListener("click", deleteSelected);
  $("reset-boxes").addEventListener("click", resetBoxes);
  $("overlay").addEventListener("pointerdown", onPointerDown);
  $("overlay").addEventListener("pointermove", onPointerMove);
  $("overlay").addEventListener("pointerup", onPointerUp);
  $("overlay").addEventListener("pointercancel", () => { page.gesture = null; renderAll(); });
  $("photo").addEventListener("load", layout);
  $("photo").addEventListener("error", async () => {
    if (!page.record) return;
    try {
      await api(page.record.image_url);
    } catch (error) {
      showError(`Image ${page.index + 1} cannot be shown: ${error.message} (reject it with x, or fix the file)`);
    }
  });
  // The image fits the stage: again whenever the stage's width changes (the window, the panel moving under).
  new ResizeObserver(layout).observe(document.querySelector(".stage"));
  window.addEventListener("resize", layout);
  start();
})();
