# Names and cache keys of otelguard's images; sourced by scripts/images/build.sh and by
# tests/e2e/test_images.py (the key must change whenever an input of the image does).

# image_ref NAME: the reference an image is built and imported under (chart defaults too).
image_ref() {
  case "$1" in
    agent) echo "ghcr.io/otelguard/otelguard-agent:0.1.0" ;;
    processor) echo "ghcr.io/otelguard/otelguard-processor:0.1.0" ;;
    collector) echo "ghcr.io/otelguard/otelcol-otelguard:0.1.0" ;;
    *) echo "" ;;
  esac
}

# image_key CONTAINERFILE BASE_KEY NAME CONTEXT_DIR: 16 hex digits over the Containerfile, the
# base image's key, the image name, the build scripts and every file of the build context
# (path and content), e.g. the project sources or the Collector binary. Wheels (*.whl) are left
# out: build.sh makes them from those sources only when the key misses.
image_key() {
  local file=$1 base=$2 name=$3 ctx=$4 here
  here=$(dirname "${BASH_SOURCE[0]}")
  {
    echo "$name $base"
    sha256sum < "$file"
    cat "$here/build.sh" "$here/keys.sh" | sha256sum
    (cd "$ctx" && find . -type f ! -name '*.whl' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}
