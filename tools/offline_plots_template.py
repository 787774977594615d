"""Build `.dvc/plots/offline.html`: DVC's plots page with vega, vega-lite and vega-embed inlined.

`dvc plots show` writes a page that loads these three scripts from a CDN, so on a machine without
internet the page is blank. `.dvc/config` points DVC at this template instead (`plots.html_template`),
which carries the scripts itself. Rebuild it (after changing the versions below) with:

    python tools/offline_plots_template.py      # needs npm, which fetches the packages

The scripts are the packages' own minified builds, unchanged (BSD-3-Clause, (c) the Vega authors).
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGES = {  # npm package -> its minified browser build, loaded in this order
    "vega@5.33.1": "package/build/vega.min.js",
    "vega-lite@5.23.0": "package/build/vega-lite.min.js",
    "vega-embed@6.29.0": "package/build/vega-embed.min.js",
}
OUT = Path(__file__).resolve().parents[1] / ".dvc" / "plots" / "offline.html"

PAGE = """<!DOCTYPE html>
<!-- DVC plots page for machines without internet: built by tools/offline_plots_template.py.
{provenance}
-->
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots: equations</title>
{inline}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def main() -> None:
    scripts, provenance = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for package, member in PACKAGES.items():
            name = subprocess.run(
                ["npm", "pack", package, "--silent"], cwd=tmp, check=True, capture_output=True, text=True
            ).stdout.strip()
            archive = Path(tmp) / name
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()
            with tarfile.open(archive) as tar:
                code = tar.extractfile(member).read().decode("utf-8")
            # The page is filled by text replacement of {scripts}, {plot_divs} and {refresh_tag}.
            assert "{plot_divs}" not in code and "{refresh_tag}" not in code and "</script>" not in code
            scripts.append(f"    <script>/* {package} */\n{code}\n    </script>")
            provenance.append(f"  {package}: {member} from {name} (sha256 {digest})")
    # Not str.format: the scripts are full of braces. The page's own CSS braces are unescaped first.
    page = PAGE.replace("{{", "{").replace("}}", "}")
    page = page.replace("{provenance}", "\n".join(provenance)).replace("{inline}", "\n".join(scripts))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(page, encoding="utf-8")
    print(f"{OUT}: {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
