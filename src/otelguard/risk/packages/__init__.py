"""In-use packages (docs/risk.md#in-use-packages): ``rootfs`` resolves a path inside a
container's root filesystem (symlinks relative to that root), ``databases`` reads the package
databases found there (dpkg, apk, rpm's sqlite, Python RECORD, package.json, JAR manifests),
``inventory`` indexes them per root, ``usage`` is the analyser, ``reports`` reads
vulnerability reports (CycloneDX, grype, trivy) and ``labels`` joins them with usage."""
