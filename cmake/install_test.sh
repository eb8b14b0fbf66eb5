#!/bin/bash
# install_test.sh BUILD_DIR: `cmake --install` into a private prefix gives the layout of
# cmake/Install.cmake, and the installed programs run from there (their library found
# beside them, the agent's schema the installed one).
set -u
build="$1"
prefix=$(mktemp -d /tmp/vpf-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
fail=0
check() { local what="$1"; shift; if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi; }

cmake --install "$build" --prefix "$prefix" >"$prefix.log" 2>&1 || { cat "$prefix.log"; rm -f "$prefix.log"; exit 1; }
rm -f "$prefix.log"
libdir=$(ls -d "$prefix"/lib* | head -1)
for f in bin/vpf-agent bin/vpfctl bin/vpf-gen share/vportfilter/vportfilter.ovsschema \
         share/bash-completion/completions/vpfctl share/man/man1/vpfctl.1 share/man/man1/vpf-agent.1 \
         share/man/man1/vpf-gen.1 include/vpf/netfilter.h include/vpf/protocol.h include/vpf/rpc_codes.h \
         include/vpf/limits.h share/doc/vportfilter/protocol.md share/doc/vportfilter/LICENSE; do
  check "$f installed" test -s "$prefix/$f"
done
check "libvportfilter with its SOVERSION" test -e "$libdir/libvportfilter.so.0"
check "vpfctl finds the installed library" bash -c "ldd '$prefix/bin/vpfctl' | grep -q 'libvportfilter.so.0 => $prefix/'"
check "installed vpfctl runs" bash -c "'$prefix/bin/vpfctl' --help | grep -q rule"
check "the installed agent's schema is the installed one" \
  bash -c "'$prefix/bin/vpf-agent' --help | grep -q '$prefix/share/vportfilter/vportfilter.ovsschema'"
check "vpfctl.1 is a manual page" bash -c "grep -q '^.TH vpfctl 1' '$prefix/share/man/man1/vpfctl.1' && grep -q '^.SH DESCRIPTION' '$prefix/share/man/man1/vpfctl.1'"
if [ -e "$build/ovs_plugin/vportfilter_ovs.so" ]; then
  check "the switch's module installed" test -s "$libdir/vportfilter/vportfilter_ovs.so"
fi
exit $fail
