#!/usr/bin/env bash
# Installs code-server (a real VS Code, served to a browser) from the npm registry alone.
#
# A plain `npm install code-server` fails here: its postinstall runs `npm install` in
# lib/vscode, where @vscode/ripgrep's postinstall downloads rg from GitHub. So: install
# everything with --ignore-scripts, give @vscode/ripgrep Debian's rg (its postinstall
# skips the download when bin/ exists), then build the native modules against the
# installed Node's own headers (/usr/include/node; node-gyp would download them too).
# Needs: node 20 (code-server 4.100 requires it), npm, g++, make, python3, ripgrep,
# libkrb5-dev (the kerberos module); .ci/run installs them with apt-get.
set -euo pipefail
cd "$(dirname "$0")"
export npm_config_nodedir="${npm_config_nodedir:-/usr}"
if [ ! -f "$npm_config_nodedir/include/node/node.h" ]; then
    echo "setup.sh: no Node headers under $npm_config_nodedir/include/node" >&2
    exit 1
fi
RG="$(command -v rg)" || { echo "setup.sh: ripgrep (rg) is not installed" >&2; exit 1; }

npm ci --ignore-scripts --no-audit --no-fund
npm rebuild argon2            # code-server's password hashing (node-pre-gyp, built from source)

cd node_modules/code-server/lib/vscode
npm install --ignore-scripts --omit=dev --no-audit --no-fund
mkdir -p node_modules/@vscode/ripgrep/bin
ln -sf "$RG" node_modules/@vscode/ripgrep/bin/rg
# node-pty's own post-install step (compile_commands.json) wants to npx node-gyp: not
# needed, so its failure is tolerated once the module itself is built.
npm rebuild kerberos native-watchdog @vscode/spdlog @vscode/deviceid || true
npm rebuild node-pty || true
for module in kerberos native-watchdog node-pty @vscode/spdlog; do
    if ! ls "node_modules/$module"/build/Release/*.node >/dev/null 2>&1; then
        echo "setup.sh: native module $module did not build" >&2
        exit 1
    fi
done
# What code-server's postinstall.sh does besides installing.
ln -sfn node_modules node_modules.asar
(cd bin/remote-cli && ln -sf code-linux.sh code-server)
(cd bin/helpers && ln -sf browser-linux.sh browser.sh)
(cd extensions && npm install --ignore-scripts --omit=dev --no-audit --no-fund)
echo "setup.sh: code-server ready in $(pwd)/../.."
