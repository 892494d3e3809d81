// Proof that contract/check.mjs catches what it must: each test copies proto/ to a temp dir,
// makes one edit and runs the check against the committed images. Run by `make contract-check`
// (node --test contract/).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const protoFile = join("mcp", "runtime", "v1", "runtime.proto");
const dirs = [];
/** The released version the runtime reports (CONTRACT_VERSION) and the next minor after it. */
const [major, minor] = readFileSync(join(root, "crates", "mcp-runtime-core", "src", "lib.rs"), "utf8")
  .match(/pub const CONTRACT_VERSION: &str = "(\d+)\.(\d+)";/)
  .slice(1)
  .map(Number);
const current = `${major}.${minor}`;
const next = `${major}.${minor + 1}`;
const imageName = (v) => new RegExp(`mcp\\.runtime\\.v${v.replace(".", "\\.")}\\.json`);
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A copy of proto/ with `edit` applied to runtime.proto; returns its directory. */
function editedProto(edit) {
  const dir = mkdtempSync(join(tmpdir(), "contract-fixture-"));
  dirs.push(dir);
  cpSync(join(root, "proto"), dir, { recursive: true });
  const path = join(dir, protoFile);
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
  const w = check("--write-image", "--proto", proto, "--images", images, "--version", next);
  assert.equal(w.status, 0, w.out);
  const ok = check("--proto", proto, "--images", images, "--version", next);
  assert.equal(ok.status, 0, ok.out);

  // And removing the field again later breaks the next minor although the current never had it.
  const removed = check("--images", images, "--version", next);
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
