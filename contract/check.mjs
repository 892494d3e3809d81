#!/usr/bin/env node
// The contract checks of `make contract-check` (docs/contract.md, "Versioning"):
//
// 1. `buf lint` (STANDARD, proto/buf.yaml) on proto/.
// 2. `buf breaking` (FILE rules) of proto/ against EVERY released image in contract/images/:
//    the current contract must stay wire- and source-compatible with each released v1 minor.
// 3. The image of the version the runtime reports (CONTRACT_VERSION in
//    crates/mcp-runtime-core/src/lib.rs) exists and equals proto/ as built now (without comments):
//    a schema change therefore cannot land without a deliberate new image and a minor bump.
//
// Images are append-only, written by `make contract-image` (this script with --write-image), one
// per released `MAJOR.MINOR`; a change `buf breaking` rejects needs a `v2` package instead.
//
// Usage: node contract/check.mjs [--write-image] [--proto DIR] [--images DIR] [--version X.Y]
// Environment: BUF, the buf CLI (default clients/ts/node_modules/.bin/buf, npm @bufbuild/buf).
// Exit status 0 when every check passes, 1 otherwise (with the reason on stderr).

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values: opts } = parseArgs({
  options: {
    "write-image": { type: "boolean", default: false },
    proto: { type: "string", default: join(root, "proto") },
    images: { type: "string", default: join(root, "contract", "images") },
    version: { type: "string" },
  },
});
const buf = process.env.BUF ?? join(root, "clients", "ts", "node_modules", ".bin", "buf");

/** CONTRACT_VERSION (`MAJOR.MINOR`) from the core crate, the version health reports. */
function contractVersion() {
  const src = readFileSync(join(root, "crates", "mcp-runtime-core", "src", "lib.rs"), "utf8");
  const m = src.match(/pub const CONTRACT_VERSION: &str = "(\d+\.\d+)";/);
  if (!m) throw new Error("CONTRACT_VERSION not found in crates/mcp-runtime-core/src/lib.rs");
  return m[1];
}

/** Runs buf with `args`; returns its exit status, output echoed. */
function runBuf(args) {
  const r = spawnSync(buf, args, { stdio: "inherit" });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

/** The image of `proto` as built now, without source info (comments do not make a version). */
function buildImage(proto) {
  const dir = mkdtempSync(join(tmpdir(), "contract-image-"));
  try {
    const out = join(dir, "image.json");
    execFileSync(buf, ["build", proto, "--exclude-source-info", "-o", out], { stdio: "inherit" });
    return JSON.parse(readFileSync(out, "utf8"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const version = opts.version ?? contractVersion();
const major = version.split(".")[0];
const imageName = (v) => `mcp.runtime.v${v}.json`;
const current = join(opts.images, imageName(version));

if (opts["write-image"]) {
  if (existsSync(current)) {
    console.error(`${current} exists: released images are never rewritten; bump the minor first`);
    process.exit(1);
  }
  writeFileSync(current, JSON.stringify(buildImage(opts.proto), null, 1) + "\n");
  console.log(`wrote ${current}`);
  process.exit(0);
}

let failed = false;
let broken = false;
const fail = (msg) => {
  console.error(`contract check: ${msg}`);
  failed = true;
};

if (runBuf(["lint", opts.proto]) !== 0) fail("buf lint failed (STANDARD rules, proto/buf.yaml)");

const released = readdirSync(opts.images)
  .filter((f) => f.startsWith(`mcp.runtime.v${major}.`) && f.endsWith(".json"))
  .sort();
if (released.length === 0) fail(`no released image of major ${major} in ${opts.images}`);
for (const image of released) {
  if (runBuf(["breaking", opts.proto, "--against", join(opts.images, image)]) !== 0) {
    broken = true;
    fail(
      `proto/ breaks the released contract ${image}: within v${major} only additive changes ` +
        `are allowed; a breaking change is a new package mcp.runtime.v${Number(major) + 1}`,
    );
  }
}

if (!existsSync(current)) {
  fail(`no image for CONTRACT_VERSION ${version}: run \`make contract-image\` to record it`);
} else if (
  !broken &&
  JSON.stringify(buildImage(opts.proto)) !== JSON.stringify(JSON.parse(readFileSync(current, "utf8")))
) {
  fail(
    `proto/ differs from the released image ${imageName(version)}: an additive change needs a ` +
      `minor bump of CONTRACT_VERSION and \`make contract-image\` (released images never change)`,
  );
}

if (failed) process.exit(1);
console.log(
  `contract check: lint ok; compatible with ${released.join(", ")}; proto/ is contract ${version}`,
);
