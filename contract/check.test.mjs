// Proof that contract/check.mjs catches what it must: each test copies proto/ to a temp dir,
// makes one edit to one of its two packages (mcp.runtime.v1, mcp.core.v1) and runs the check
// against the committed images. Run by `make contract-check` (node --test contract/).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const runtimeProto = join("mcp", "runtime", "v1", "runtime.proto");
const coreProto = join("mcp", "core", "v1", "core.proto");
const dirs = [];
const lib = readFileSync(join(root, "crates", "mcp-runtime-core", "src", "lib.rs"), "utf8");
/** A released version constant of the core crate, and the next minor after it. */
function versions(constant) {
  const [major, minor] = lib
    .match(new RegExp(`pub const ${constant}: &str = "(\\d+)\\.(\\d+)";`))
    .slice(1)
    .map(Number);
  return { current: `${major}.${minor}`, next: `${major}.${minor + 1}` };
}
const { current, next } = versions("CONTRACT_VERSION");
const core = versions("CORE_SPI_VERSION");
const imageName = (v, stem = "mcp.runtime") =>
  new RegExp(`${stem.replace(".", "\\.")}\\.v${v.replace(".", "\\.")}\\.json`);
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A copy of proto/ with `edit` applied to `file` (default runtime.proto); returns its directory. */
function editedProto(edit, file = runtimeProto) {
  const dir = mkdtempSync(join(tmpdir(), "contract-fixture-"));
  dirs.push(dir);
  cpSync(join(root, "proto"), dir, { recursive: true });
  const path = join(dir, file);
  const before = readFileSync(path, "utf8");
  const after = edit(before);
  assert.notEqual(after, before, "the fixture edit did not apply");
  writeFileSync(path, after);
  return dir;
}

/** Runs contract/check.mjs with `args`; returns its status and combined output. */
function check(...args) {
  const r = spawnSync(process.execPath, [join(root, "contract", "check.mjs"), ...args], {
    encoding: "utf8",
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test("the committed contract passes", () => {
  const r = check();
  assert.equal(r.status, 0, r.out);
});

test("deleting a field is breaking", () => {
  const proto = editedProto((s) => s.replace(/\n\s*\/\/[^\n]*\n\s*string trace_id = 8;/, ""));
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /Previously present field "8" with name "trace_id" on message "AuthContext" was deleted/);
  assert.match(r.out, /breaks the released contract mcp\.runtime\.v1\.0\.json/);
});

test("changing a field's type is breaking", () => {
  const proto = editedProto((s) => s.replace("uint32 http_status = 1;", "string http_status = 1;"));
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /changed type from "uint32" to "string"/);
});

test("renumbering an enum value is breaking", () => {
  const proto = editedProto((s) => s.replace("HTTP_METHOD_DELETE = 3;", "HTTP_METHOD_DELETE = 4;"));
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /Previously present enum value "3" on enum "HttpMethod" was deleted/);
});

test("a lint violation fails", () => {
  const proto = editedProto((s) => s.replace("message Header {", "message header_pair {").replace(
    "repeated Header headers = 2;", "repeated header_pair headers = 2;"));
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /buf lint failed/);
});

test("an additive change passes buf breaking but needs a new minor image", () => {
  const addField = (s) =>
    s.replace(
      "  string trace_id = 8;\n",
      "  string trace_id = 8;\n  // Tenant of the subject (fixture only).\n  string tenant = 9;\n",
    );
  const proto = editedProto(addField);
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.doesNotMatch(r.out, /breaks the released contract/);
  assert.match(r.out, new RegExp(`differs from the released image ${imageName(current).source}`));

  // Recording the new minor (a copy of the images, plus the next) makes it pass.
  const images = mkdtempSync(join(tmpdir(), "contract-images-"));
  dirs.push(images);
  cpSync(join(root, "contract", "images"), images, { recursive: true });
  const version = `mcp.runtime.v1=${next}`;
  const w = check("--write-image", "--proto", proto, "--images", images, "--version", version);
  assert.equal(w.status, 0, w.out);
  assert.match(w.out, imageName(next));
  assert.doesNotMatch(w.out, /mcp\.core\./, "only the package without an image is written");
  const ok = check("--proto", proto, "--images", images, "--version", version);
  assert.equal(ok.status, 0, ok.out);

  // And removing the field again later breaks the next minor although the current never had it.
  const removed = check("--images", images, "--version", version);
  assert.equal(removed.status, 1, removed.out);
  assert.match(removed.out, new RegExp(`breaks the released contract ${imageName(next).source}`));
});

test("a comment-only edit needs no new version", () => {
  const proto = editedProto((s) =>
    s.replace("// The HTTP method.\n", "// The HTTP method, as the client sent it.\n"),
  );
  const r = check("--proto", proto);
  assert.equal(r.status, 0, r.out);
});

// The second package, mcp.core.v1 (the Core SPI): its own version (CORE_SPI_VERSION), its own
// images, checked on its own.

test("deleting a field of the Core SPI is breaking against its own image", () => {
  const proto = editedProto(
    (s) => s.replace(/\n\s*\/\/[^\n]*\n\s*string traceparent = 5;/, ""),
    coreProto,
  );
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /Previously present field "5" with name "traceparent" on message "ResolveCallerRequest" was deleted/);
  assert.match(r.out, new RegExp(`breaks the released contract ${imageName(core.current, "mcp.core").source}`));
  assert.doesNotMatch(r.out, /breaks the released contract mcp\.runtime/);
});

test("renumbering a Core SPI enum value is breaking", () => {
  const proto = editedProto(
    (s) => s.replace("HOOK_POINT_POST_FETCH = 3;", "HOOK_POINT_POST_FETCH = 4;"),
    coreProto,
  );
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /Previously present enum value "3" on enum "HookPoint" was deleted/);
});

test("an additive Core SPI change needs a new core minor, not a runtime one", () => {
  const proto = editedProto(
    (s) =>
      s.replace(
        "  string traceparent = 5;\n",
        "  string traceparent = 5;\n  // The client's user agent (fixture only).\n  string user_agent = 6;\n",
      ),
    coreProto,
  );
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.doesNotMatch(r.out, /breaks the released contract/);
  assert.match(r.out, new RegExp(`differs from the released image ${imageName(core.current, "mcp.core").source}`));
  assert.match(r.out, /CORE_SPI_VERSION/);
  assert.doesNotMatch(r.out, /differs from the released image mcp\.runtime/);

  const images = mkdtempSync(join(tmpdir(), "contract-images-"));
  dirs.push(images);
  cpSync(join(root, "contract", "images"), images, { recursive: true });
  const version = `mcp.core.v1=${core.next}`;
  const w = check("--write-image", "--proto", proto, "--images", images, "--version", version);
  assert.equal(w.status, 0, w.out);
  assert.match(w.out, imageName(core.next, "mcp.core"));
  const ok = check("--proto", proto, "--images", images, "--version", version);
  assert.equal(ok.status, 0, ok.out);
});

test("an additive runtime change does not touch the Core SPI's version", () => {
  const proto = editedProto((s) =>
    s.replace(
      "  string trace_id = 8;\n",
      "  string trace_id = 8;\n  // Tenant of the subject (fixture only).\n  string tenant = 9;\n",
    ),
  );
  const r = check("--proto", proto);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, new RegExp(`differs from the released image ${imageName(current).source}`));
  // core.proto imports runtime.proto, but only the core's own files make its version.
  assert.doesNotMatch(r.out, /mcp\.core\.v1\.\d+\.json/);
});

test("a malformed --version is refused", () => {
  const r = check("--version", "1.2");
  assert.equal(r.status, 2, r.out);
  assert.match(r.out, /expected PACKAGE=MAJOR\.MINOR/);
});
