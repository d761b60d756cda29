#!/usr/bin/env bash
# Rebuilds plots/templates/offline.html, the page template of `dvc plots show` (see .dvc/config),
# with Vega, Vega-Lite and Vega-Embed inlined: DVC's own page loads them from a CDN, so on an
# offline machine its plots stay blank. Needs npm and the npm registry (or its mirror);
# the licenses go beside this script. Usage: plots/vendor/update.sh [vega] [vega-lite] [vega-embed]
set -euo pipefail
VEGA=${1:-5.33.1} VEGA_LITE=${2:-5.23.0} VEGA_EMBED=${3:-6.29.0}
here=$(cd "$(dirname "$0")" && pwd)
out=$here/../templates/offline.html
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
for spec in "vega@$VEGA" "vega-lite@$VEGA_LITE" "vega-embed@$VEGA_EMBED"; do
  mkdir "${spec%@*}" && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz -C "${spec%@*}" && rm ./*.tgz
done
# vega's tarball carries no LICENSE file: LICENSE.vega is the vega repository's BSD-3-Clause text
# (as shipped in vega-util 1.17.3), kept as long as package.json still says BSD-3-Clause.
grep -q '"license": *"BSD-3-Clause"' vega/package/package.json || { echo "vega's license changed" >&2; exit 1; }
cp vega-lite/package/LICENSE "$here/LICENSE.vega-lite"
cp vega-embed/package/LICENSE "$here/LICENSE.vega-embed"

script() {  # package, version, file: one inline <script>, without the source map reference
  printf '<script>/* %s %s, BSD-3-Clause, plots/vendor/LICENSE.%s */\n' "$1" "$2" "$1"
  sed -e 's|//# sourceMappingURL=.*$||' "$1/package/build/$3"
  printf '\n</script>\n'
}
{
  cat <<'HTML'
<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>cxrprune plots</title>
  <!-- Made by plots/vendor/update.sh. Scripts inline, so the page renders offline. DVC fills
       the plot_divs placeholder below; no scripts placeholder, so DVC adds no CDN links. -->
  <style>
    body { font-family: sans-serif; }
    table { border-spacing: 15px; }
  </style>
HTML
  script vega "$VEGA" vega.min.js
  script vega-lite "$VEGA_LITE" vega-lite.min.js
  script vega-embed "$VEGA_EMBED" vega-embed.min.js
  cat <<'HTML'
</head>
<body>
{plot_divs}
</body>
</html>
HTML
} > "$out.tmp"
grep -q '{scripts}' "$out.tmp" && { echo "a bundled script contains {scripts}, which DVC would replace" >&2; exit 1; }
mv "$out.tmp" "$out"
echo "wrote $out ($(du -h "$out" | cut -f1)): vega $VEGA, vega-lite $VEGA_LITE, vega-embed $VEGA_EMBED"
