#!/usr/bin/env node
// The contract checks of `make contract-check` (docs/contract.md and docs/core-spi.md,
// "Versioning"). proto/ holds two packages, each versioned on its own with its own append-only
// images in contract/images/:
//
//   package         directory         version constant (crates/mcp-runtime-core/src/lib.rs)  images
//   mcp.runtime.v1  mcp/runtime/v1    CONTRACT_VERSION                                       mcp.runtime.v1.<minor>.json
//   mcp.core.v1     mcp/core/v1       CORE_SPI_VERSION                                       mcp.core.v1.<minor>.json
//
// 1. `buf lint` (STANDARD, proto/buf.yaml) on all of proto/.
// 2. For each package, `buf breaking` (FILE rules) of that package (`--path`) against EVERY
//    released image of it: the package must stay wire- and source-compatible with each released
//    minor of its major.
// 3. For each package, the image of the version its constant names exists, and the package's
//    own files in it equal the package as built now (without comments): a schema change cannot
//    land without a deliberate new image and a minor bump of that package's constant. An image
//    also holds the files the package imports (mcp.core.v1 imports mcp.runtime.v1), so that
//    `buf breaking` can compile it, but only the package's own files are compared: an additive
//    change of mcp.runtime.v1 needs a new runtime minor, not a new core minor.
//
// Images are append-only, written by `make contract-image` (this script with --write-image) for
// each package whose current version has no image yet; a change `buf breaking` rejects needs a
// `v2` package instead.
//
// Usage: node contract/check.mjs [--write-image] [--proto DIR] [--images DIR]
//                                [--version PACKAGE=X.Y ...]
// `--version` overrides the version of one package (repeatable), e.g. `mcp.core.v1=1.1`.
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
    version: { type: "string", multiple: true, default: [] },
  },
});
const buf = resolve(process.env.BUF ?? join(root, "clients", "ts", "node_modules", ".bin", "buf"));
const protoDir = resolve(opts.proto);
const imagesDir = resolve(opts.images);

/** The versioned packages of proto/, in the order they are checked. */
const PACKAGES = [
  { name: "mcp.runtime.v1", dir: "mcp/runtime/v1", constant: "CONTRACT_VERSION" },
  { name: "mcp.core.v1", dir: "mcp/core/v1", constant: "CORE_SPI_VERSION" },
];

/** A version constant (`MAJOR.MINOR`) from the core crate. */
function versionConstant(name) {
  const src = readFileSync(join(root, "crates", "mcp-runtime-core", "src", "lib.rs"), "utf8");
  const m = src.match(new RegExp(`pub const ${name}: &str = "(\\d+\\.\\d+)";`));
  if (!m) throw new Error(`${name} not found in crates/mcp-runtime-core/src/lib.rs`);
  return m[1];
}

const overrides = new Map();
for (const v of opts.version) {
  const m = v.match(/^([a-z0-9.]+)=(\d+\.\d+)$/);
  if (!m || !PACKAGES.some((p) => p.name === m[1])) {
    console.error(`--version ${v}: expected PACKAGE=MAJOR.MINOR with PACKAGE one of ` +
      PACKAGES.map((p) => p.name).join(", "));
    process.exit(2);
  }
  overrides.set(m[1], m[2]);
}

/** Runs buf in proto/ (so `--path` names match the image's file names); returns its status. */
function runBuf(args) {
  const r = spawnSync(buf, args, { stdio: "inherit", cwd: protoDir });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

/** The image of one package as built now (with its imports, without source info). */
function buildImage(pkg) {
  const dir = mkdtempSync(join(tmpdir(), "contract-image-"));
  try {
    const out = join(dir, "image.json");
    execFileSync(buf, ["build", ".", "--path", pkg.dir, "--exclude-source-info", "-o", out], {
      stdio: "inherit",
      cwd: protoDir,
    });
    return JSON.parse(readFileSync(out, "utf8"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The package's own files of an image (imports left out), as a comparable string. */
const ownFiles = (image, pkg) =>
  JSON.stringify((image.file ?? []).filter((f) => f.name.startsWith(`${pkg.dir}/`)));

const imageName = (pkg, v) => `${pkg.name.replace(/\.v\d+$/, "")}.v${v}.json`;

const plan = PACKAGES.map((pkg) => {
  const version = overrides.get(pkg.name) ?? versionConstant(pkg.constant);
  return { pkg, version, major: version.split(".")[0], current: join(imagesDir, imageName(pkg, version)) };
});

if (opts["write-image"]) {
  const missing = plan.filter((p) => !existsSync(p.current));
  if (missing.length === 0) {
    console.error(
      `every package's current version has an image (${plan.map((p) => `${p.pkg.name} ${p.version}`).join(", ")}): ` +
        "released images are never rewritten; bump the minor first",
    );
    process.exit(1);
  }
  for (const p of missing) {
    writeFileSync(p.current, JSON.stringify(buildImage(p.pkg), null, 1) + "\n");
    console.log(`wrote ${p.current}`);
  }
  process.exit(0);
}

let failed = false;
const fail = (msg) => {
  console.error(`contract check: ${msg}`);
  failed = true;
};

if (runBuf(["lint", "."]) !== 0) fail("buf lint failed (STANDARD rules, proto/buf.yaml)");

const summary = [];
for (const { pkg, version, major, current } of plan) {
  const stem = pkg.name.replace(/\.v\d+$/, "");
  const released = readdirSync(imagesDir)
    .filter((f) => f.startsWith(`${stem}.v${major}.`) && f.endsWith(".json"))
    .sort();
  if (released.length === 0) fail(`no released image of ${pkg.name} major ${major} in ${imagesDir}`);
  let broken = false;
  for (const image of released) {
    if (runBuf(["breaking", ".", "--path", pkg.dir, "--against", join(imagesDir, image)]) !== 0) {
      broken = true;
      fail(
        `${pkg.dir} breaks the released contract ${image}: within v${major} only additive changes ` +
          `are allowed; a breaking change is a new package ${stem}.v${Number(major) + 1}`,
      );
    }
  }
  if (!existsSync(current)) {
    fail(`no image for ${pkg.constant} ${version}: run \`make contract-image\` to record it`);
  } else if (
    !broken &&
    ownFiles(buildImage(pkg), pkg) !== ownFiles(JSON.parse(readFileSync(current, "utf8")), pkg)
  ) {
    fail(
      `${pkg.dir} differs from the released image ${imageName(pkg, version)}: an additive change ` +
        `needs a minor bump of ${pkg.constant} and \`make contract-image\` (released images never change)`,
    );
  }
  summary.push(`${pkg.name} ${version} (compatible with ${released.join(", ")})`);
}

if (failed) process.exit(1);
console.log(`contract check: lint ok; ${summary.join("; ")}`);
