// The manifest and the VS Code layer agree: every contributed command is registered, and
// every registered command is contributed (a command missing from either is invisible or
// broken in the editor).

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

const ROOT = path.resolve(__dirname, "..", "..");

test("contributed and registered commands are the same set", () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
    contributes: { commands: { command: string }[] };
  };
  const contributed = manifest.contributes.commands.map((c) => c.command).sort();
  const source = fs.readFileSync(path.join(ROOT, "src", "vscode", "extension.ts"), "utf8");
  const registered = [...source.matchAll(/^ {4}"(runforge\.[A-Za-z]+)": /gm)].map((m) => m[1]).sort();
  assert.deepEqual(registered, contributed);
  assert.ok(contributed.length >= 17);
});
