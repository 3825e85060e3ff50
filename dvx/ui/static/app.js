// dvx ui: reads the page URL, asks the JSON API (docs/ui.md) for its data and builds the page with
// DOM calls only. Text from the store always goes through textContent or attribute setters, never
// through HTML parsing, so a file named <img src=x onerror=alert(1)>.csv shows as text.
"use strict";

const PAGE = 50;        // rows per page of names and versions
const TREE_PAGE = 200;  // entries per page of a folder
const DIFF_PAGE = 200;  // changes per page of a diff
const ROW_COUNTS = 20;  // modified tables on a diff page whose rows are compared at once

// -- small helpers --------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function size(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function plural(n, word) { return `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`; }

function qs(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  return search.toString();
}

async function api(path, params) {
  const response = await fetch(`/api/${path}?${qs(params || {})}`, {headers: {accept: "application/json"}});
  const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// URLs: /datasets, /datasets/NAME, /datasets/NAME/-/SELECTOR[/tree/PATH | /file/PATH], the same under
// /models, and /diff?kind=&a=&b=. Names and paths are encoded segment by segment.
const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");
const plural_kind = (kind) => kind === "model" ? "models" : "datasets";
const nameUrl = (kind, name) => `/${plural_kind(kind)}/${encodePath(name)}`;
function splitRef(ref) { const at = ref.lastIndexOf("@"); return [ref.slice(0, at), ref.slice(at + 1)]; }
function versionUrl(kind, ref, folder) {
  const [name, selector] = splitRef(ref);
  const base = `${nameUrl(kind, name)}/-/${encodeURIComponent(selector)}`;
  return folder ? `${base}/tree/${encodePath(folder.replace(/\/$/, ""))}` : base;
}
const fileUrl = (kind, ref, path) => `${versionUrl(kind, ref)}/file/${encodePath(path)}`;
const diffUrl = (kind, a, b) => `/diff?${qs({kind, a, b})}`;
const link = (href, text, attrs) => el("a", Object.assign({href}, attrs || {}), text);
const IMAGE = /\.(png|jpe?g|gif|webp|bmp)$/i;  // the suffixes dvx.api.browse makes thumbnails of
const isImage = (path) => IMAGE.test(path);

function parseLocation() {
  const segments = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(location.search);
  if (segments[0] === "diff") return {page: "diff", kind: params.get("kind") || "dataset", a: params.get("a"), b: params.get("b")};
  const kind = segments[0] === "models" ? "model" : "dataset";
  if (segments.length <= 1) return {page: "names", kind, params};
  const dash = segments.indexOf("-");
  if (dash < 0) return {page: "name", kind, name: segments.slice(1).join("/"), params};
  const name = segments.slice(1, dash).join("/");
  const ref = `${name}@${segments[dash + 1] || "latest"}`;
  const mode = segments[dash + 2];
  const path = segments.slice(dash + 3).join("/");
  return {page: mode === "file" ? "file" : "version", kind, name, ref, path: mode ? path : "", params};
}

function setTitle(...parts) { document.title = [...parts, "dvx"].join(" · "); }

function pager(total, offset, limit, go) {
  if (total <= limit) return null;
  const last = Math.floor((total - 1) / limit) * limit;
  return el("div", {class: "pager"},
    el("button", {disabled: offset <= 0, onclick: () => go(0)}, "« first"),
    el("button", {disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit))}, "‹ newer"),
    el("span", {class: "muted"}, `${(offset + 1).toLocaleString("en")}–${Math.min(total, offset + limit).toLocaleString("en")} of ${total.toLocaleString("en")}`),
    el("button", {disabled: offset + limit >= total, onclick: () => go(offset + limit)}, "older ›"),
    el("button", {disabled: offset >= last, onclick: () => go(last)}, "last »"));
}

function withParam(key, value) {
  const params = new URLSearchParams(location.search);
  if (value === null || value === "" || value === 0) params.delete(key); else params.set(key, value);
  const search = params.toString();
  return location.pathname + (search ? "?" + search : "");
}

function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => h instanceof Node ? el("th", {}, h) : el("th", {text: h})))),
    el("tbody", {}, rows));
}

function tags(list, kind) {
  return el("span", {class: "tags"}, (list || []).map((t) => el("span", {class: `tag ${kind || ""}`, text: t})));
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.filter(Boolean));
}

function failure(error) {
  return el("div", {class: "error", role: "alert"}, el("strong", {}, "Error: "), error.message || String(error));
}

// -- pages ----------------------------------------------------------------------------------------
async function namesPage(route) {
  const {kind, params} = route;
  const query = params.get("q") || "";
  const offset = Number(params.get("offset") || 0);
  setTitle(kind === "model" ? "Models" : "Datasets");
  const data = await api("names", {kind, q: query, offset, limit: PAGE});
  const filter = el("input", {type: "search", placeholder: `Filter ${plural_kind(kind)} by name`, value: query,
                              "aria-label": "Filter by name", id: "filter"});
  let timer;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => navigate(withParam("q", filter.value).replace(/([?&])offset=\d+&?/, "$1"), true), 250);
  });
  const metricsHeader = kind === "model";
  const rows = data.items.map((row) => el("tr", {},
    el("td", {}, link(nameUrl(kind, row.name), row.name, {class: "name"})),
    el("td", {}, link(versionUrl(kind, row.latest), `v${row.version}`)),
    el("td", {}, tags(Object.keys(row.tags), kind === "model" ? "alias" : "")),
    metricsHeader ? el("td", {class: "metrics"}, Object.entries(row.metrics || {}).map(([k, v]) => el("span", {class: "metric", text: `${k}=${v}`}))) : null,
    el("td", {class: "num"}, row.files.toLocaleString("en")),
    el("td", {class: "num"}, size(row.bytes)),
    el("td", {class: "num"}, size(row.stored_bytes)),
    el("td", {class: "muted"}, when(row.created))));
  const headers = ["Name", "Latest", kind === "model" ? "Aliases" : "Tags", ...(metricsHeader ? ["Metrics"] : []),
                   "Files", "Size", "Stored", "Last change"];
  show(el("h1", {text: kind === "model" ? "Models" : "Datasets"}),
       el("div", {class: "toolbar"}, filter, el("span", {class: "muted"}, plural(data.total, kind))),
       data.items.length ? table(headers, rows, {id: "names"}) :
         el("p", {class: "muted"}, query ? `No ${kind} name contains “${query}”.` : `No ${plural_kind(kind)} in this store yet.`),
       pager(data.total, offset, PAGE, (o) => navigate(withParam("offset", o))));
  filter.focus();
  filter.setSelectionRange(query.length, query.length);
}

async function namePage(route) {
  const {kind, name, params} = route;
  const offset = Number(params.get("offset") || 0);
  const sort = params.get("sort") || "";
  setTitle(name);
  const history = await api("history", {kind, name, offset, limit: PAGE, sort});
  const focus = params.get("focus") || (history.items.find((v) => !v.deleted) || {}).ref;
  const header = el("div", {class: "title"}, el("span", {class: "kind", text: kind}), el("h1", {text: name}),
                    el("span", {class: "muted"}, plural(history.total, "version")));
  const versions = kind === "model" ? modelVersions(history, sort) : datasetVersions(history, kind);
  const lineageBox = el("section", {class: "lineage", id: "lineage"}, el("h2", {text: "Lineage"}),
                        el("p", {class: "muted"}, "Loading…"));
  const aliasBox = kind === "model" ? el("section", {id: "aliases"}, el("h2", {text: "Aliases"}), el("p", {class: "muted"}, "Loading…")) : null;
  show(header, versions, pager(history.total, offset, PAGE, (o) => navigate(withParam("offset", o))), aliasBox, lineageBox);
  if (aliasBox) api("aliases", {name}).then((a) => aliasBox.replaceChildren(el("h2", {text: "Aliases"}), aliasHistory(a)), (e) => aliasBox.append(failure(e)));
  if (focus) drawLineage(lineageBox, kind, focus);
}

function versionCells(v, kind) {
  return [
    el("td", {}, link(versionUrl(kind, v.ref), `v${v.version}`, {class: "version"})),
    el("td", {class: "mono"}, v.id.slice(0, 12)),
    el("td", {class: "message", text: v.message || ""}),
    el("td", {text: v.author || ""}),
    el("td", {class: "muted"}, when(v.created)),
    el("td", {class: "num"}, v.files.toLocaleString("en")),
    el("td", {class: "num"}, size(v.bytes)),
    el("td", {class: "num"}, size(v.new_bytes)),
  ];
}

function compareForm(items, kind, rowsOf) {
  // Two radio columns (A and B) and a button: any two versions of the page can be compared.
  const live = items.filter((v) => !v.deleted);
  const form = el("form", {class: "compare", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    if (data.get("a") && data.get("b")) navigate(diffUrl(kind, data.get("a"), data.get("b")));
  }});
  const radio = (group, v, checked) => el("input", {type: "radio", name: group, value: v.ref, checked, "aria-label": `${group.toUpperCase()}: ${v.ref}`});
  const rows = items.map((v, i) => v.deleted
    ? el("tr", {class: "deleted"}, el("td"), el("td"), el("td", {}, `v${v.version}`), el("td", {colspan: 20, class: "muted"}, `deleted ${when(v.deleted_at)} by ${v.deleted_by}`))
    : el("tr", {}, el("td", {}, radio("a", v, live[1] === v)), el("td", {}, radio("b", v, live[0] === v)), rowsOf(v, i)));
  return {form, rows, live};
}

function datasetVersions(history, kind) {
  const {form, rows, live} = compareForm(history.items, kind, (v) => [...versionCells(v, kind), el("td", {}, tags(v.tags))]);
  form.append(table(["A", "B", "Version", "Id", "Message", "Author", "Created", "Files", "Size", "New stored", "Tags"], rows, {id: "versions"}),
              live.length > 1 ? el("button", {type: "submit", id: "compare"}, "Compare A → B") : null);
  return form;
}

function modelVersions(history, sort) {
  const metricNames = [...new Set(history.items.flatMap((v) => Object.keys(v.metrics || {})))].sort();
  const sortLink = (key) => {
    const [current, order] = sort.split(":");
    const next = current === key && order === "desc" ? key : `${key}:desc`;
    const arrow = current === key ? (order === "desc" ? " ▼" : " ▲") : "";
    return link(withParam("sort", next).replace(/([?&])offset=\d+&?/, "$1"), key + arrow, {class: "sort", "data-metric": key});
  };
  const {form, rows, live} = compareForm(history.items, "model", (v) => [
    ...versionCells(v, "model"), el("td", {}, tags(v.tags, "alias"), tags(v.labels)),
    metricNames.map((m) => el("td", {class: "num"}, v.metrics && m in v.metrics ? String(v.metrics[m]) : "—"))]);
  form.append(table(["A", "B", "Version", "Id", "Message", "Author", "Created", "Files", "Size", "New stored", "Aliases / tags",
                     ...metricNames.map(sortLink)], rows, {id: "versions"}),
              live.length > 1 ? el("button", {type: "submit", id: "compare"}, "Compare A → B") : null);
  return form;
}

function aliasHistory(aliases) {
  if (!aliases.length) return el("p", {class: "muted"}, "No aliases.");
  return el("div", {class: "aliases"}, aliases.map((a) => el("div", {class: "alias-card", "data-alias": a.alias},
    el("h3", {}, el("span", {class: "tag alias", text: a.alias}), " → ",
       a.version === null ? el("span", {class: "muted"}, "deleted") : `v${a.version}`, a.protected ? el("span", {class: "muted"}, " (protected)") : null),
    table(["When", "By", "Action", "From", "To", "Message"], a.history.slice().reverse().map((e) => el("tr", {},
      el("td", {class: "muted"}, when(e.at)), el("td", {text: e.by}), el("td", {text: e.action}),
      el("td", {}, e.from_version ? `v${e.from_version}` : ""), el("td", {}, e.to_version ? `v${e.to_version}` : ""),
      el("td", {text: e.message || ""})))))));
}

async function drawLineage(box, kind, ref) {
  let graph;
  try { graph = await api("lineage", {kind, ref, depth: 3}); } catch (error) { box.replaceChildren(el("h2", {text: "Lineage"}), failure(error)); return; }
  const W = 190, H = 48, GAP_X = 70, GAP_Y = 22;
  const columns = graph.nodes.map((n) => n.column);
  const minColumn = Math.min(...columns), maxColumn = Math.max(...columns);
  const maxRow = Math.max(...graph.nodes.map((n) => n.row));
  const width = (maxColumn - minColumn + 1) * (W + GAP_X), height = (maxRow + 1) * (H + GAP_Y) + 10;
  const at = {};
  for (const n of graph.nodes) at[n.key] = {x: (n.column - minColumn) * (W + GAP_X) + 10, y: n.row * (H + GAP_Y) + 5};
  const picture = svg("svg", {viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": `Lineage of ${ref}`},
    svg("defs", {}, svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse"},
                        svg("path", {d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead"}))));
  for (const edge of graph.edges) {  // edge.from was made from edge.to: draw source → product
    const from = at[edge.to], to = at[edge.from];
    if (!from || !to) continue;
    const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
    // Within one column (versions at the same distance from the focus) the edge loops out to the right.
    const d = x2 <= x1 ? `M ${x1} ${y1} C ${x1 + GAP_X / 2} ${y1}, ${to.x + W + GAP_X / 2} ${y2}, ${to.x + W} ${y2}`
                       : `M ${x1} ${y1} C ${x1 + GAP_X / 2} ${y1}, ${x2 - GAP_X / 2} ${y2}, ${x2} ${y2}`;
    picture.append(svg("path", {d, class: `edge ${edge.kind}`, "marker-end": "url(#arrow)"}, svg("title", {text: edge.kind})));
  }
  for (const node of graph.nodes) {
    const {x, y} = at[node.key];
    const label = node.ref || node.id.slice(0, 12);
    const group = svg("g", {class: `node ${node.kind} ${node.direction}${node.deleted ? " deleted" : ""}`, "data-ref": label, tabindex: 0},
      svg("title", {text: `${node.kind} ${label}\n${node.id}\n${node.message || ""}`}),
      svg("rect", {x, y, width: W, height: H, rx: 6}),
      svg("text", {x: x + 10, y: y + 19, class: "label", text: label.length > 26 ? label.slice(0, 25) + "…" : label}),
      svg("text", {x: x + 10, y: y + 37, class: "sub", text: `${node.kind}${node.deleted ? " · deleted" : ""} · ${node.id.slice(0, 8)}`}));
    if (node.ref && node.name && !node.deleted) {
      const target = node.kind === "model" ? `${nameUrl("model", node.name)}?focus=${encodeURIComponent(node.ref)}` : versionUrl(node.kind, node.ref);
      const anchor = svg("a", {href: target, "aria-label": `${node.kind} ${label}`});
      anchor.append(group);
      picture.append(anchor);
    } else picture.append(group);
  }
  box.replaceChildren(el("h2", {}, "Lineage of ", el("span", {class: "mono", text: ref})),
    el("p", {class: "muted"}, "Left: what it was made from (parents, inputs). Right: what was made from it. Click a node to open it."),
    el("div", {class: "graph"}, picture));
}

async function versionPage(route) {
  const {kind, ref, path, params} = route;
  const offset = Number(params.get("offset") || 0);
  const [info, tree] = await Promise.all([api("version", {kind, ref}), api("tree", {kind, ref, path, offset, limit: TREE_PAGE})]);
  const fullRef = info.ref || `${info.name}@v${info.version}`;
  setTitle(path || "/", fullRef);
  const crumbs = [link(versionUrl(kind, fullRef), fullRef, {class: "crumb"})];
  let sofar = "";
  for (const part of path.split("/").filter(Boolean)) {
    sofar = sofar ? `${sofar}/${part}` : part;
    crumbs.push(" / ", link(versionUrl(kind, fullRef, sofar), part, {class: "crumb"}));
  }
  const rows = tree.entries.map((entry) => el("tr", {class: entry.type},
    el("td", {}, entry.type === "folder"
      ? link(versionUrl(kind, fullRef, entry.path), entry.name + "/", {class: "folder"})
      : link(fileUrl(kind, fullRef, entry.path), [isImage(entry.path) && entry.type === "file"
          ? el("img", {class: "mini", alt: "", loading: "lazy", src: `/api/thumbnail?${qs({kind, ref: fullRef, path: entry.path, size: 64})}`}) : null,
          entry.name], {class: "file"})),
    el("td", {class: "num"}, entry.type === "folder" ? plural(entry.files, "file") : (entry.type === "link" ? `→ ${entry.link}` : "")),
    el("td", {class: "num"}, size(entry.size))));
  const parents = (info.parents || []).map((p) => link(versionUrl(kind, p), p));
  const previous = (info.parents || [])[0];
  show(versionHeader(info, kind, fullRef, parents, previous),
       el("div", {class: "crumbs"}, crumbs),
       el("p", {class: "muted"}, `${plural(tree.folders, "folder")}, ${plural(tree.files, "file")} here`),
       table(["Name", "Files", "Size"], rows, {id: "tree"}),
       pager(tree.total, offset, TREE_PAGE, (o) => navigate(withParam("offset", o))));
}

function versionHeader(info, kind, fullRef, parents, previous) {
  const facts = [["Id", el("span", {class: "mono", text: info.id})], ["Message", info.message || ""], ["Author", info.author || ""],
                 ["Created", when(info.created)], ["Files", (info.files || 0).toLocaleString("en")], ["Size", size(info.bytes)],
                 ["Stored", size(info.stored_bytes)], ["New stored", size(info.stored_new_bytes)]];
  if (parents.length) facts.push(["Parents", el("span", {}, parents.flatMap((p, i) => i ? [", ", p] : [p]))]);
  if ((info.inputs || []).length || (info.input_refs || []).length) facts.push(["Inputs", el("span", {}, (info.input_refs || []).map((r) => link(versionUrl("dataset", r), r + " ")))]);
  if (info.metrics && Object.keys(info.metrics).length) facts.push(["Metrics", el("span", {}, Object.entries(info.metrics).map(([k, v]) => el("span", {class: "metric", text: `${k}=${v}`})))]);
  const tagList = kind === "model" ? (info.aliases || []) : (info.tags || []);
  return el("div", {class: "version-head"},
    el("div", {class: "title"}, el("span", {class: "kind", text: kind}), el("h1", {}, link(nameUrl(kind, info.name), info.name), el("span", {text: `@v${info.version}`})), tags(tagList, kind === "model" ? "alias" : "")),
    el("dl", {class: "facts"}, facts.map(([k, v]) => [el("dt", {text: k}), el("dd", {}, v)])),
    el("div", {class: "actions"},
       previous ? link(diffUrl(kind, previous, fullRef), `Diff with ${previous}`, {class: "button", id: "diff-parent"}) : null,
       link(`${nameUrl(kind, info.name)}?focus=${encodeURIComponent(fullRef)}`, "History and lineage", {class: "button"})));
}

async function filePage(route) {
  const {kind, ref, path} = route;
  const [info, shown] = await Promise.all([api("version", {kind, ref}), api("preview", {kind, ref, path})]);
  const fullRef = info.ref || `${info.name}@v${info.version}`;
  setTitle(path, fullRef);
  const folder = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
  const raw = `/api/raw?${qs({kind, ref: fullRef, path})}`;
  const crumbs = [link(versionUrl(kind, fullRef), fullRef, {class: "crumb"})];
  let sofar = "";
  for (const part of folder.split("/").filter(Boolean)) {
    sofar = sofar ? `${sofar}/${part}` : part;
    crumbs.push(" / ", link(versionUrl(kind, fullRef, sofar), part, {class: "crumb"}));
  }
  crumbs.push(" / ", el("span", {class: "filename", text: path.split("/").pop()}));
  show(el("div", {class: "crumbs"}, crumbs),
       el("div", {class: "file-head"}, el("span", {class: "muted"}, `${size(shown.size)} · xxh3 ${shown.digest}`),
          link(raw, "Download", {class: "button", id: "download", download: path.split("/").pop()})),
       el("section", {class: "preview", id: "preview"}, previewOf(shown, kind, fullRef, path)));
}

function previewOf(shown, kind, ref, path) {
  if (shown.type === "table") {
    const note = shown.total_rows !== null && shown.total_rows !== undefined
      ? `First ${plural(shown.rows.length, "row")} of ${shown.total_rows.toLocaleString("en")}` : `First ${plural(shown.rows.length, "row")}${shown.truncated ? "" : " (all)"}`;
    return [el("p", {class: "muted"}, note),
            el("div", {class: "scroll"}, table(shown.columns,
              shown.rows.map((row) => el("tr", {}, row.map((c) => el("td", {text: c === null ? "" : String(c)})))),
              {class: "data", id: "preview-table"}))];
  }
  if (shown.type === "text") {
    return [shown.truncated ? el("p", {class: "muted"}, "The start of the file:") : null, el("pre", {class: "text", text: shown.text})];
  }
  if (shown.type === "image") {
    return el("img", {class: "thumb", alt: path, src: `/api/thumbnail?${qs({kind, ref, path, size: 512})}`});
  }
  return el("p", {class: "muted"}, `No preview: ${shown.reason}.`);
}

async function diffPage(route) {
  const {kind, a, b} = route;
  const offset = Number(new URLSearchParams(location.search).get("offset") || 0);
  setTitle(`${a} → ${b}`);
  const data = await api("diff", {kind, a, b, offset, limit: DIFF_PAGE});
  const s = data.summary;
  const rows = data.items.map((c) => {
    const target = c.change === "removed" ? fileUrl(kind, data.a, c.path) : fileUrl(kind, data.b, c.path);
    return el("tr", {class: `change ${c.change}`, "data-path": c.path},
      el("td", {}, el("span", {class: `badge ${c.change}`, text: c.change})),
      el("td", {}, link(target, c.path), c.old_path ? el("span", {class: "muted"}, ` (from ${c.old_path})`) : null),
      el("td", {class: "num"}, c.change === "added" ? "" : size(c.old_size)),
      el("td", {class: "num"}, c.change === "removed" ? "" : size(c.new_size)),
      el("td", {class: "rows"}, c.table ? el("span", {class: "muted"}, "…") : ""));
  });
  show(el("div", {class: "title"}, el("h1", {}, "Diff ", link(versionUrl(kind, data.a), data.a), " → ", link(versionUrl(kind, data.b), data.b))),
       el("p", {class: "summary", id: "diff-summary"},
          el("span", {class: "badge added", text: `${s.added} added`}), " ", el("span", {class: "badge removed", text: `${s.removed} removed`}), " ",
          el("span", {class: "badge modified", text: `${s.modified} modified`}), " ", s.renamed ? el("span", {class: "badge renamed", text: `${s.renamed} renamed`}) : null,
          el("span", {class: "muted"}, ` · ${plural(s.files_a, "file")} (${size(s.bytes_a)}) → ${plural(s.files_b, "file")} (${size(s.bytes_b)})`)),
       data.total ? table(["Change", "Path", `Size in ${data.a}`, `Size in ${data.b}`, "Rows"], rows, {id: "changes"}) : el("p", {class: "muted"}, "No differences."),
       pager(data.total, offset, DIFF_PAGE, (o) => navigate(withParam("offset", o))));
  // Row counts of modified tables: a few at a time, each in its own request.
  const wanted = data.items.filter((c) => c.table).slice(0, ROW_COUNTS);
  for (const change of wanted) {
    const cell = [...document.querySelectorAll("#changes tr.change")].find((tr) => tr.dataset.path === change.path)?.querySelector(".rows");
    try {
      const r = await api("diff/rows", {kind, a: data.a, b: data.b, path: change.path});
      cell.replaceChildren(el("span", {class: "rowdiff"}, el("span", {class: "plus", text: `+${r.added.toLocaleString("en")}`}), " ",
                                  el("span", {class: "minus", text: `−${r.removed.toLocaleString("en")}`}),
                                  el("span", {class: "muted"}, ` rows (${r.rows_a.toLocaleString("en")} → ${r.rows_b.toLocaleString("en")})`)));
    } catch (error) { cell.replaceChildren(el("span", {class: "muted", text: error.message})); }
  }
}

// -- routing --------------------------------------------------------------------------------------
const PAGES = {names: namesPage, name: namePage, version: versionPage, file: filePage, diff: diffPage};

async function render() {
  const route = parseLocation();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === plural_kind(route.kind) && route.page !== "diff");
  try {
    await PAGES[route.page](route);
  } catch (error) {
    show(failure(error));
  }
}

function navigate(url, replace) {
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  render().then(() => { if (!replace) window.scrollTo(0, 0); });
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a");
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || a.hasAttribute("download")) return;
  const href = a.getAttribute("href") || a.getAttribute("xlink:href");
  if (!href || !href.startsWith("/") || href.startsWith("/api/")) return;
  event.preventDefault();
  navigate(href);
});
window.addEventListener("popstate", render);
document.addEventListener("DOMContentLoaded", () => {
  api("info").then((info) => { document.getElementById("store").textContent = info.store; }, () => {});
  render();
});
