"""Rebuild ../offline.html and the licences beside this file from the npm packages of vega, vega-lite and
vega-embed, at the versions dvc-render's own page loads from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS).

    cd "$(mktemp -d)" && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2   # from the repository root
    python "$OLDPWD"/.dvc/plots/vega/build.py "$OLDPWD"/.dvc/plots vega-5.20.2.tgz vega-lite-5.2.0.tgz vega-embed-6.18.2.tgz

The order matters: vega-embed uses the `vega` and `vegaLite` the scripts before it define.

Each package's minified browser build (its package.json "jsdelivr" file, what the CDN serves) is inlined
byte for byte: `dvc plots show` writes its page wherever --out says, so a script beside the template could
not be referenced relatively from it. The template has no {scripts} placeholder, so dvc-render's CDN tags
are left out; {plot_divs} and {refresh_tag} are filled in by dvc-render.
"""

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DSAH plots (dvc plots show)</title>
    <!-- {names}: BSD-3-Clause, licences in vega/. Inlined so that the page draws with no network
         (dvc-render's default page loads them from a CDN); rebuilt by vega/build.py. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def package(archive: Path) -> tuple[str, str, bytes, bytes]:
    """-> (name, version, the minified browser build, LICENSE) of an `npm pack` tarball."""
    with tarfile.open(archive) as tar:
        meta = json.load(tar.extractfile("package/package.json"))
        build = tar.extractfile(f"package/{meta['jsdelivr']}").read()
        licence = tar.extractfile("package/LICENSE").read()
    return meta["name"], meta["version"], build, licence


def main(plots: Path, archives: list[Path]) -> None:
    blocks, names = [], []
    for archive in archives:
        name, version, build, licence = package(archive)
        text = build.decode("utf-8")
        if re.search(r"</script|\{(plot_divs|scripts|refresh_tag)\}", text, re.IGNORECASE):
            sys.exit(f"{name}: its build holds text that would end the inline script or a dvc-render placeholder")
        digest = hashlib.sha256(build).hexdigest()
        blocks.append(f'    <script data-package="{name}@{version}" data-sha256="{digest}">\n{text}\n</script>')
        names.append(f"{name} {version}")
        (plots / "vega" / f"LICENSE-{name}").write_bytes(licence)
    page = PAGE.format(names=", ".join(names), scripts="\n".join(blocks))
    (plots / "offline.html").write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
