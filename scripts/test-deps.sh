#!/usr/bin/env bash
# Install the system packages the tests use when they are missing: Chromium (Debian's package)
# for the compliance report's browser checks. Without root or apt-get those tests skip with a
# reason (and fail under CI=true, where they must run).
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "recops: installing ${need[*]} for the tests (Debian packages)" >&2
  # An install cut short earlier leaves dpkg "interrupted", and apt refuses until it is finished.
  (DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
    || echo "warning: could not install ${need[*]}: the tests that need it will fail" >&2
else
  echo "note: ${need[*]} is missing and cannot be installed here (needs root and apt-get)" >&2
fi
exit 0
