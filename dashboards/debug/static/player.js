// Weftline's session replay player: rebuilds the recorded page from the OpenReplay
// tracker's messages (decoded server-side, see dashboards/debug/replay.py), written from
// the message semantics of the wire protocol.
//
// Safety: the page is rebuilt in an <iframe sandbox="allow-same-origin"> (no scripts, no
// forms, no popups, no navigation of the top page) with a Content-Security-Policy that
// allows inline styles and data: URLs only; on top of that the player never gives the
// page a URL to fetch: scripts become inert <wl-script>, <link> becomes <style>,
// <base>/<meta http-equiv> are dropped, and every URL that is not data: is removed from
// attributes and CSS. Nothing in a replay can reach the recorded app.

const SVG_NS = "http://www.w3.org/2000/svg";
const CSP =
  "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; media-src data:";
// Time without a message that "skip inactivity" jumps over (ms of session time).
const IDLE_MS = 3000;
const CLICK_SHOW_MS = 700;

// Wire type ids (enrich/openreplay_decode.py SCHEMA).
const T = {
  PageLocationOld: 4, ViewportSize: 5, ViewportScroll: 6, CreateDocument: 7,
  CreateElement: 8, CreateText: 9, MoveNode: 10, RemoveNode: 11, SetAttr: 12,
  RemoveAttr: 13, SetData: 14, NodeScroll: 16, InputValue: 18, InputChecked: 19,
  MouseMove: 20, Animation: 36, Visibility: 55, FontFace: 57, Focus: 58, AttrURL: 60,
  CSSData: 61, Slot: 65, Click: 68, ClickOld: 69, IFrameDoc: 70, SSReplace: 71,
  SSInsert: 73, SSDelete: 75, SSAddOwner: 76, SSRemoveOwner: 77, TabChange: 117,
  PageLocation: 122,
};
// What a seek must apply in order; the rest only matters at the moment it is reached.
const URL_ATTRS = new Set([
  "src", "href", "srcset", "poster", "data", "action", "formaction", "background",
  "xlink:href", "ping", "lowsrc", "dynsrc", "longdesc", "imagesrcset", "manifest",
]);
// Elements whose recorded tag would load, run or navigate something.
const INERT_TAGS = {
  script: "wl-script", noscript: "wl-noscript", base: "wl-base", object: "wl-object",
  embed: "wl-embed", portal: "wl-portal", applet: "wl-applet",
};
const BASE_CSS =
  "wl-script, wl-noscript, wl-base, wl-object, wl-embed, wl-portal, wl-applet" +
  " { display: none !important; }";

export function isDataUrl(v) {
  return /^\s*data:/i.test(v);
}

// CSS with every URL the browser would fetch taken out (data: URLs stay).
export function inertCss(css) {
  return css
    .replace(/@import\s+[^;]*;?/gi, "")
    .replace(/url\(\s*(['"]?)([^'")]*)\1\s*\)/gi, (m, _q, u) =>
      isDataUrl(u) ? m : "url(about:invalid)");
}

function frameDoc(frame) {
  try {
    return frame.contentDocument;
  } catch {
    return null;
  }
}

// One tab's page: an iframe, its node table and its style sheets.
class Screen {
  constructor(host) {
    this.frame = document.createElement("iframe");
    this.frame.setAttribute("sandbox", "allow-same-origin");
    this.frame.setAttribute("referrerpolicy", "no-referrer");
    this.frame.setAttribute("tabindex", "-1");
    this.frame.className = "rp-screen";
    this.frame.srcdoc =
      `<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="${CSP}">` +
      "</head><body></body></html>";
    this.ready = new Promise((resolve) => this.frame.addEventListener("load", resolve, { once: true }));
    host.appendChild(this.frame);
    this.width = 0;
    this.height = 0;
    this.url = "";
    this.title = "";
    this.hidden = false;
  }

  get doc() {
    return frameDoc(this.frame);
  }

  // Back to an empty page (before the first message, or a seek backwards).
  reset() {
    const doc = this.doc;
    this.nodes = new Map();
    this.sheets = new Map();
    this.scrolls = new Map();
    this.viewScroll = null;
    this.sheetsDirty = true;
    this.base = new doc.defaultView.CSSStyleSheet();
    this.base.replaceSync(BASE_CSS);
    const html = doc.documentElement;
    while (html.firstChild) html.firstChild.remove();
    for (const a of [...html.attributes]) html.removeAttribute(a.name);
    this.nodes.set(0, html);
    this.url = "";
    this.title = "";
    this.hidden = false;
  }

  // A new document (page load, tracker restart): the tree and sheets start over, the
  // page's URL and viewport (sent just before) stay.
  createDocument() {
    const { url, title, width, height } = this;
    this.reset();
    Object.assign(this, { url, title, width, height });
  }

  element(tag, svg) {
    const doc = this.doc;
    if (svg) return doc.createElementNS(SVG_NS, tag);
    const t = tag.toLowerCase();
    if (INERT_TAGS[t]) return doc.createElement(INERT_TAGS[t]);
    // A linked style sheet is never fetched: the tracker sends its text (inlineCss), as
    // rules of an adopted sheet or as the text of a child node, which a <style> applies.
    if (t === "link") return doc.createElement("style");
    if (t === "iframe" || t === "frame") {
      const f = doc.createElement("iframe");
      f.setAttribute("sandbox", "allow-same-origin");
      return f;
    }
    try {
      return doc.createElement(t);
    } catch {
      return doc.createElement("wl-unknown");
    }
  }

  insert(node, parentId, index) {
    const parent = this.nodes.get(parentId);
    if (!parent || !node || node === parent) return;
    const ref = parent.childNodes[index] || null;
    if (ref === node) return;
    try {
      parent.insertBefore(node, ref);
    } catch {
      // e.g. a second <head> under a document node: the recorded tree wins elsewhere.
    }
  }

  setAttr(id, name, value) {
    const el = this.nodes.get(id);
    if (!el || el.nodeType !== 1) return;
    const n = name.toLowerCase();
    if (n.startsWith("on") || n === "autofocus" || n === "srcdoc" || n === "sandbox") return;
    if (n === "http-equiv" || (n === "rel" && el.localName === "style")) return;
    if (URL_ATTRS.has(n)) {
      if (!this.allowedUrl(el, n, value)) {
        el.setAttribute("data-wl-" + n.replace(":", "-"), value.slice(0, 2000));
        return;
      }
    }
    if (n === "style") value = inertCss(value);
    try {
      el.setAttribute(name, value);
    } catch {
      // an attribute name the DOM refuses (the recorded page had it via the parser)
    }
  }

  allowedUrl(el, n, value) {
    if (isDataUrl(value) && n !== "href") return true;
    // In-page fragments (SVG <use href="#id">, anchors) load nothing.
    if ((n === "href" || n === "xlink:href") && value.trim().startsWith("#")) return true;
    // An anchor's href only shows where it pointed; the iframe takes no pointer events.
    if (n === "href" && (el.localName === "a" || el.localName === "area")) {
      return !/^\s*javascript:/i.test(value);
    }
    return false;
  }

  removeAttr(id, name) {
    const el = this.nodes.get(id);
    if (el && el.nodeType === 1) {
      try {
        el.removeAttribute(name);
      } catch {
        /* invalid name */
      }
    }
  }

  setData(id, data) {
    const node = this.nodes.get(id);
    if (!node) return;
    if (node.nodeType === 3) {
      const p = node.parentNode;
      node.data = p && p.localName === "style" ? inertCss(data) : data;
    }
  }

  sheet(id) {
    let s = this.sheets.get(id);
    if (!s) {
      s = { css: new this.doc.defaultView.CSSStyleSheet(), owners: new Set() };
      this.sheets.set(id, s);
    }
    this.sheetsDirty = true;
    return s;
  }

  // Constructed sheets are adopted by the document or shadow root their owner is in,
  // worked out when the frame is drawn (an owner may be inserted after its sheet).
  flushSheets() {
    if (!this.sheetsDirty) return;
    this.sheetsDirty = false;
    const doc = this.doc;
    const byRoot = new Map([[doc, [this.base]]]);
    for (const s of this.sheets.values()) {
      for (const owner of s.owners) {
        const n = this.nodes.get(owner);
        if (!n) continue;
        const root = n.nodeType === 9 || n.nodeType === 11 ? n : n.getRootNode();
        if (root !== doc && !(root instanceof doc.defaultView.ShadowRoot)) continue;
        if (!byRoot.has(root)) byRoot.set(root, []);
        const list = byRoot.get(root);
        if (!list.includes(s.css)) list.push(s.css);
      }
    }
    for (const [root, list] of byRoot) {
      try {
        root.adoptedStyleSheets = list;
      } catch {
        /* a root of another document */
      }
    }
  }

  // Scroll positions need layout: set once per drawn frame, not per message.
  flushScroll() {
    for (const [id, [x, y]] of this.scrolls) {
      const el = this.nodes.get(id);
      if (el && el.nodeType === 1) {
        el.scrollLeft = x;
        el.scrollTop = y;
      }
    }
    this.scrolls.clear();
    if (this.viewScroll) {
      const se = this.doc.scrollingElement || this.doc.documentElement;
      se.scrollLeft = this.viewScroll[0];
      se.scrollTop = this.viewScroll[1];
      this.viewScroll = null;
    }
  }

  apply(m) {
    const type = m[2];
    switch (type) {
      case T.CreateDocument:
        this.createDocument();
        break;
      case T.CreateElement: {
        const [, , , id, parentId, index, tag, svg] = m;
        const el = this.element(tag, svg);
        this.nodes.set(id, el);
        this.insert(el, parentId, index);
        if (el.localName === "style") this.sheetsDirty = true;
        break;
      }
      case T.CreateText: {
        const [, , , id, parentId, index] = m;
        const node = this.doc.createTextNode("");
        this.nodes.set(id, node);
        this.insert(node, parentId, index);
        break;
      }
      case T.MoveNode:
        this.insert(this.nodes.get(m[3]), m[4], m[5]);
        this.sheetsDirty = true;
        break;
      case T.RemoveNode: {
        const n = this.nodes.get(m[3]);
        if (n && n.parentNode) n.parentNode.removeChild(n);
        this.sheetsDirty = true;
        break;
      }
      case T.SetAttr:
        this.setAttr(m[3], m[4], m[5]);
        break;
      case T.AttrURL:
        this.setAttr(m[3], m[4], m[5]);
        break;
      case T.RemoveAttr:
        this.removeAttr(m[3], m[4]);
        break;
      case T.SetData:
      case T.CSSData:
        this.setData(m[3], m[4]);
        break;
      case T.NodeScroll:
        this.scrolls.set(m[3], [m[4], m[5]]);
        break;
      case T.ViewportScroll:
        this.viewScroll = [m[3], m[4]];
        break;
      case T.ViewportSize:
        this.width = m[3];
        this.height = m[4];
        break;
      case T.InputValue: {
        const el = this.nodes.get(m[3]);
        if (!el || !("value" in el)) break;
        // mask > 0: obscured by the tracker (value empty, mask = length); -1: hidden.
        const mask = m[5];
        el.value = mask > 0 ? "*".repeat(Math.min(mask, 1000)) : mask < 0 ? "" : m[4];
        if (mask !== 0) el.setAttribute("data-wl-masked", mask < 0 ? "hidden" : "obscured");
        else el.removeAttribute("data-wl-masked");
        break;
      }
      case T.InputChecked: {
        const el = this.nodes.get(m[3]);
        if (el && "checked" in el) el.checked = !!m[4];
        break;
      }
      case T.Animation: {
        const el = this.nodes.get(m[3]);
        if (!el || !el.style) break;
        try {
          for (const [k, v] of Object.entries(JSON.parse(m[4]))) el.style.setProperty(k, inertCss(String(v)));
        } catch {
          /* not JSON */
        }
        break;
      }
      case T.FontFace: {
        const [, , , , family, source, descriptors] = m;
        // Only fonts carried in the recording itself (data: URLs) load.
        if (!/url\(/i.test(source) || inertCss(source) !== source) break;
        try {
          const ff = new this.doc.defaultView.FontFace(family, source, JSON.parse(descriptors || "{}"));
          this.doc.fonts.add(ff);
          ff.load().catch(() => {});
        } catch {
          /* bad descriptors */
        }
        break;
      }
      case T.IFrameDoc: {
        const host = this.nodes.get(m[3]);
        if (!host || host.nodeType !== 1) break;
        if (host.localName === "iframe") {
          const cd = frameDoc(host);
          if (!cd) break;
          while (cd.firstChild) cd.firstChild.remove();
          this.nodes.set(m[4], cd);
        } else {
          try {
            this.nodes.set(m[4], host.shadowRoot || host.attachShadow({ mode: "open" }));
          } catch {
            /* element that cannot host a shadow root */
          }
        }
        break;
      }
      case T.SSReplace:
        try {
          this.sheet(m[3]).css.replaceSync(inertCss(m[4]));
        } catch {
          /* unparsable */
        }
        break;
      case T.SSInsert: {
        const s = this.sheet(m[3]).css;
        try {
          s.insertRule(inertCss(m[4]), Math.min(m[5], s.cssRules.length));
        } catch {
          /* a rule this browser does not parse */
        }
        break;
      }
      case T.SSDelete: {
        const s = this.sheet(m[3]).css;
        if (m[4] < s.cssRules.length) s.deleteRule(m[4]);
        break;
      }
      case T.SSAddOwner:
        this.sheet(m[3]).owners.add(m[4]);
        break;
      case T.SSRemoveOwner:
        this.sheet(m[3]).owners.delete(m[4]);
        break;
      case T.PageLocation:
        this.url = m[3];
        this.title = m[6] || this.title;
        break;
      case T.PageLocationOld:
        this.url = m[3];
        break;
      case T.Visibility:
        this.hidden = !!m[3];
        break;
      default:
        break;
    }
  }
}

// Message types whose first field is the node they change.
const NODE_TYPES = new Uint8Array(256);
for (const t of [8, 9, 10, 11, 12, 13, 14, 16, 18, 19, 36, 60, 61, 65]) NODE_TYPES[t] = 1;
// Types whose last value per node (and attribute name) is all a jump needs to apply:
// 1 attribute (by name), 2 text, 3 input value, 4 checked, 5 animation styles.
const LAST_WINS = new Uint8Array(256);
for (const [t, k] of [[12, 1], [60, 1], [13, 1], [14, 2], [61, 2], [18, 3], [19, 4], [36, 5]]) {
  LAST_WINS[t] = k;
}
// Below this many messages a seek just applies them all.
const PLAN_MIN = 400;

// A jump over messages [from, to): which ones can be left out without changing the
// page it ends on. Per tab, everything before its last CreateDocument in the range (a
// new document replaces it); nodes both created and removed in the range (never seen);
// and values overwritten later in the range (text, attributes, input values).
// Keys are numbers (tab × 2^32 + node id; node ids are uint32 in practice): this runs
// over every message of a long session on a backward seek.
function plan(msgs, from, to) {
  const skip = new Uint8Array(to - from);
  const docAt = new Map();
  for (let i = from; i < to; i++) if (msgs[i][2] === T.CreateDocument) docAt.set(msgs[i][1], i);
  const created = new Set();
  const dead = new Set();
  const last = new Map();
  const lastAttr = new Map();
  for (let i = from; i < to; i++) {
    const m = msgs[i];
    const type = m[2];
    if (!NODE_TYPES[type]) continue;
    const start = docAt.get(m[1]);
    if (start !== undefined && i < start) {
      skip[i - from] = 1;
      continue;
    }
    const node = m[1] * 4294967296 + m[3];
    if (type === T.CreateElement || type === T.CreateText) created.add(node);
    else if (type === T.RemoveNode && created.has(node)) dead.add(node);
    const kind = LAST_WINS[type];
    if (kind === 1) {
      let names = lastAttr.get(node);
      if (!names) lastAttr.set(node, (names = new Map()));
      names.set(m[4], i);
    } else if (kind) {
      last.set(node * 8 + kind, i);
    }
  }
  for (let i = from; i < to; i++) {
    if (skip[i - from]) continue;
    const m = msgs[i];
    const type = m[2];
    if (!NODE_TYPES[type]) continue;
    const node = m[1] * 4294967296 + m[3];
    if (dead.has(node)) {
      skip[i - from] = 1;
      continue;
    }
    const kind = LAST_WINS[type];
    if (kind === 1 ? lastAttr.get(node).get(m[4]) !== i : kind && last.get(node * 8 + kind) !== i) {
      skip[i - from] = 1;
    }
  }
  return skip;
}

function fmt(ms) {
  const s = Math.max(0, ms) / 1000;
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

export class Player {
  // root: the element holding the player's markup (see templates/session.html).
  constructor(root, data) {
    this.root = root;
    this.data = data;
    this.messages = data.messages;
    this.duration = Math.max(1, data.duration_ms);
    this.stage = root.querySelector(".rp-stage");
    this.viewport = root.querySelector(".rp-viewport");
    this.cursor = root.querySelector(".rp-cursor");
    this.clickLayer = root.querySelector(".rp-clicks");
    this.screens = data.tabs.map(() => new Screen(this.viewport));
    if (!this.screens.length) this.screens.push(new Screen(this.viewport));
    this.active = 0;
    this.pos = 0;
    this.time = 0;
    this.speed = 1;
    this.playing = false;
    this.skipIdle = true;
    this.mouse = null;
    this.clicks = [];
    this.listeners = [];
  }

  async ready() {
    await Promise.all(this.screens.map((s) => s.ready));
    for (const s of this.screens) s.reset();
    this.firstTab();
  }

  firstTab() {
    const first = this.messages.find((m) => m[2] === T.CreateDocument);
    this.active = first ? first[1] : 0;
  }

  onTime(fn) {
    this.listeners.push(fn);
  }

  // Applies every message up to `t` (ms). Moving backwards rebuilds from the start;
  // pointer moves and scrolls in between only count by their last value.
  seek(t) {
    t = Math.max(0, Math.min(this.duration, t));
    if (t < this.time) {
      for (const s of this.screens) s.reset();
      this.pos = 0;
      this.mouse = null;
      this.clicks = [];
      this.firstTab();
    }
    const msgs = this.messages;
    let end = this.pos;
    while (end < msgs.length && msgs[end][0] <= t) end++;
    const c0 = performance.now();
    const skip = end - this.pos > PLAN_MIN ? plan(msgs, this.pos, end) : null;
    const c1 = performance.now();
    while (this.pos < end) {
      const i = this.pos++;
      if (skip && skip[i - (end - skip.length)]) continue;
      const m = msgs[i];
      const type = m[2];
      if (type === T.MouseMove) {
        if (m[1] === this.active || this.mouse === null) this.mouse = [m[3], m[4], m[1]];
      } else if (type === T.Click || type === T.ClickOld) {
        this.clicks.push({ t: m[0], tab: m[1], id: m[3], at: this.mouse });
        if (this.clicks.length > 20) this.clicks.shift();
      } else if (type === T.TabChange) {
        this.active = m[1];
      } else {
        const screen = this.screens[m[1]];
        if (screen) screen.apply(m);
        if (type === T.CreateDocument) this.active = m[1];
      }
    }
    this.time = t;
    const c2 = performance.now();
    this.draw();
    // What the last seek cost, by step (bench/replay_player.py prints it).
    this.lastSeek = { plan: c1 - c0, apply: c2 - c1, draw: performance.now() - c2 };
    for (const fn of this.listeners) fn(t);
  }

  // Puts the active tab on screen, scaled to fit, with the pointer and recent clicks.
  draw() {
    this.screens.forEach((s, i) => {
      s.flushSheets();
      s.frame.style.display = i === this.active ? "block" : "none";
    });
    const s = this.screens[this.active];
    if (!s) return;
    const w = s.width || 1280;
    const h = s.height || 720;
    const box = this.stage.getBoundingClientRect();
    // Fit the width; the stage then takes the scaled height.
    const scale = Math.min(1, (box.width || w) / w);
    this.viewport.style.width = `${w}px`;
    this.viewport.style.height = `${h}px`;
    this.viewport.style.transform = `scale(${scale})`;
    this.stage.style.height = `${Math.ceil(h * scale)}px`;
    s.frame.style.width = `${w}px`;
    s.frame.style.height = `${h}px`;
    s.flushScroll();
    const bar = this.root.querySelector(".rp-url");
    if (bar) bar.textContent = s.url || "";
    this.root.classList.toggle("rp-hidden-tab", s.hidden);
    if (this.mouse && this.mouse[2] === this.active) {
      this.cursor.style.display = "block";
      this.cursor.style.transform = `translate(${this.mouse[0]}px, ${this.mouse[1]}px)`;
    } else {
      this.cursor.style.display = "none";
    }
    this.clickLayer.replaceChildren();
    for (const c of this.clicks) {
      if (c.tab !== this.active || this.time - c.t > CLICK_SHOW_MS) continue;
      let at = c.at;
      if (!at) {
        const el = s.nodes.get(c.id);
        if (el && el.getBoundingClientRect) {
          const r = el.getBoundingClientRect();
          at = [r.left + r.width / 2, r.top + r.height / 2];
        }
      }
      if (!at) continue;
      const dot = document.createElement("div");
      dot.className = "rp-click";
      dot.style.transform = `translate(${at[0]}px, ${at[1]}px)`;
      dot.style.opacity = String(1 - (this.time - c.t) / CLICK_SHOW_MS);
      this.clickLayer.appendChild(dot);
    }
  }

  play() {
    if (this.playing) return;
    if (this.time >= this.duration) this.seek(0);
    this.playing = true;
    let last = performance.now();
    const tick = (now) => {
      if (!this.playing) return;
      let t = this.time + (now - last) * this.speed;
      last = now;
      const next = this.messages[this.pos];
      if (this.skipIdle && next && next[0] - t > IDLE_MS) t = next[0] - 300;
      this.seek(t);
      if (this.time >= this.duration) {
        this.pause();
        return;
      }
      this.frame = requestAnimationFrame(tick);
    };
    this.frame = requestAnimationFrame(tick);
    this.root.classList.add("rp-playing");
  }

  pause() {
    this.playing = false;
    cancelAnimationFrame(this.frame);
    this.root.classList.remove("rp-playing");
    for (const fn of this.listeners) fn(this.time);
  }

  // The replayed document of the tab on screen (tests read it).
  document() {
    return this.screens[this.active] ? this.screens[this.active].doc : null;
  }
}

// Controls and timeline wiring for the session page.
export async function mount(root) {
  const status = root.querySelector(".rp-status");
  const t0 = performance.now();
  let data;
  try {
    const r = await fetch(root.dataset.src, { credentials: "same-origin" });
    if (r.status === 404) {
      status.textContent = "No recording for this session.";
      root.classList.add("rp-empty");
      return null;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    data = await r.json();
  } catch (e) {
    status.textContent = `Replay unavailable: ${e.message}`;
    return null;
  }
  const player = new Player(root, data);
  await player.ready();
  const scrub = root.querySelector(".rp-scrub");
  const fill = root.querySelector(".rp-fill");
  const clock = root.querySelector(".rp-clock");
  const playBtn = root.querySelector(".rp-play");
  const items = [...document.querySelectorAll("[data-t]")].map((el) => ({
    el,
    t: Number(el.dataset.t) * 1000,
  }));

  // Markers: clicks, errors, failed requests, agent events (data-marker on items).
  const markers = root.querySelector(".rp-markers");
  for (const { el, t } of items) {
    const kind = el.dataset.marker;
    if (!kind || el.closest(".tab-pane:not([data-pane=all])")) continue;
    const mk = document.createElement("button");
    mk.type = "button";
    mk.className = `rp-marker rp-marker-${kind}`;
    mk.style.left = `${Math.min(100, (t / player.duration) * 100)}%`;
    mk.title = `${fmt(t)} ${el.dataset.title || kind}`;
    mk.addEventListener("click", (ev) => {
      ev.stopPropagation();
      go(t);
    });
    markers.appendChild(mk);
  }

  let current = [];
  const onTime = (t) => {
    fill.style.width = `${Math.min(100, (t / player.duration) * 100)}%`;
    clock.textContent = `${fmt(t)} / ${fmt(player.duration)}`;
    playBtn.textContent = player.playing ? "Pause" : "Play";
    // Playhead: in every list, the last item at or before now.
    const next = [];
    const lists = new Map();
    for (const it of items) {
      const list = it.el.parentElement;
      if (it.t <= t + 1) lists.set(list, it);
    }
    for (const it of lists.values()) next.push(it.el);
    for (const el of current) if (!next.includes(el)) el.classList.remove("current");
    for (const el of next) {
      if (!el.classList.contains("current")) {
        el.classList.add("current");
        const list = el.parentElement;
        if (list.scrollHeight > list.clientHeight) {
          const top = el.offsetTop; // the list is position: relative, its offsetParent
          if (top < list.scrollTop || top > list.scrollTop + list.clientHeight - el.offsetHeight) {
            list.scrollTop = Math.max(0, top - list.clientHeight / 3);
          }
        }
      }
    }
    current = next;
  };
  player.onTime(onTime);

  const go = (t) => {
    player.seek(t);
    const u = new URL(location.href);
    u.searchParams.set("t", (t / 1000).toFixed(1));
    history.replaceState(null, "", u);
  };
  scrub.addEventListener("click", (ev) => {
    const r = scrub.getBoundingClientRect();
    go(((ev.clientX - r.left) / r.width) * player.duration);
  });
  playBtn.addEventListener("click", () => (player.playing ? player.pause() : player.play()));
  root.querySelector(".rp-speed").addEventListener("change", (ev) => {
    player.speed = Number(ev.target.value);
  });
  const skip = root.querySelector(".rp-skip");
  skip.addEventListener("change", () => {
    player.skipIdle = skip.checked;
  });
  player.skipIdle = skip.checked;
  for (const { el, t } of items) {
    el.addEventListener("click", (ev) => {
      if (ev.target.closest("a:not(.t-link), summary, details[open] > *:not(summary)")) return;
      ev.preventDefault();
      go(t);
    });
  }
  window.addEventListener("resize", () => player.draw());

  const q = new URL(location.href).searchParams.get("t");
  // Without ?t=, open on the first drawn page (the tracker's initial snapshot).
  const snap = data.messages.find((m) => m[2] === T.CreateDocument);
  const first = snap ? snap[0] : 0;
  const start = q !== null && q !== "" && !Number.isNaN(Number(q)) ? Number(q) * 1000 : first;
  player.seek(start);
  status.textContent = "";
  root.dataset.firstFrameMs = String(Math.round(performance.now() - t0));
  root.classList.add("rp-ready");
  window.weftlinePlayer = player;
  return player;
}
