#!/usr/bin/env bash
# Packs what an offline GPU machine (a bare CUDA image: no network, none of our Debian packages)
# needs to build and run gum_train into .device-kit/ (ignored by git; copy it along with the
# working tree):
#   .device-kit/debs/   the Debian 12 .deb files of scripts/install_deps.sh's libraries and
#                       the runtime libraries they pull in that a bare CUDA image lacks
#   .device-kit/data/   the embedded corpus (data/corpus, built by scripts/make_corpus.sh);
#                       not the shards: data/shards/prepare.json names its sources by absolute
#                       path, so `gum_train prepare` there rebuilds them anyway (about a minute)
#                       and 21 MB of transfer is saved
# On that machine, `source scripts/device_setup.sh` unpacks the debs into a prefix and sets the
# environment; scripts/gpu_check.sh does that itself when .device-kit/ exists.
# Runs here (Debian 12 with apt, network to the Debian mirrors); needs no root: apt-get
# download writes into the current folder. Re-running replaces the kit.
# Usage: scripts/device_kit.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kit="$root/.device-kit"
# The size the kit plus the tracked tree must stay under (GUM_KIT_LIMIT_MIB; 64 MiB is what the
# remote machines of bench/README.md accept).
limit_mib=${GUM_KIT_LIMIT_MIB:-64}

# The -dev packages of scripts/install_deps.sh (build tools, python and corpus sources are
# left out: the image has its own compiler, CMake and python; the corpus is packed built).
WANTED=(
  libcxxopts-dev nlohmann-json3-dev libspdlog-dev libsentencepiece-dev libpcre2-dev libutf8proc-dev catch2
  libopenmpi-dev openmpi-bin libopenblas-dev liblapacke-dev zlib1g-dev pkg-config
)
# Assumed present on the GPU machine, so neither they nor what only they pull in are packed.
# - the C/C++ toolchain nvcc runs on (gcc, g++, binutils, libc headers, sanitizer runtimes)
#   and the libraries every glibc system has (their Debian 12 copies would shadow the
#   image's newer ones through LD_LIBRARY_PATH);
# - the Fortran compiler: libopenmpi-dev asks for it for mpifort only; libgfortran5 is kept;
# - build-time-only dependencies of libopenmpi-dev (headers of Open MPI's own plugins' libraries,
#   jQuery for its docs) and openssh-client (mpirun needs ssh only to start remote nodes);
# - Debian's base system (dpkg, debconf, PAM, ...), which the packed libraries never load.
ASSUMED=(
  libc6 libc6-dev libc-dev-bin linux-libc-dev libcrypt1 libcrypt-dev libgcc-s1 libstdc++6
  gcc-12-base gcc-12 cpp-12 libgcc-12-dev libgomp1 libatomic1 libitm1 libquadmath0
  libasan8 liblsan0 libtsan2 libubsan1 libcc1-0 libmpc3 libmpfr6 libgmp10 libisl23
  binutils binutils-common binutils-x86-64-linux-gnu libbinutils libctf0 libctf-nobfd0
  libgprofng0 libjansson4 zlib1g libzstd1 liblzma5 libbz2-1.0 libssl3 libselinux1
  libpcre2-8-0 libudev1 libuuid1 libtinfo6 libmd0 libbsd0 libdb5.3 libacl1 libcap-ng0
  gfortran-12 libgfortran-12-dev
  libibverbs-dev libhwloc-dev libevent-dev libpmix-dev libjs-jquery libjs-jquery-ui
  openssh-client
  dpkg tar debconf debianutils passwd adduser perl-base libpam0g libpam-modules
  libpam-modules-bin libaudit1 libaudit-common libsemanage2 libsemanage-common libsepol2
)
# Not needed, left out with what only they pull in: hwloc's optional plugins (XML through
# libxml2 and ICU, X11, OpenCL, PCI), which hwloc dlopens when present; without them it reads
# the topology from /sys. They would be 11 MB of the kit.
NOT_NEEDED=(libhwloc-plugins)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# apt resolves WANTED as for an empty system (Recommends not followed, as in install_deps.sh);
# of that set, the packed ones are those reachable from WANTED through dependencies (every
# alternative and provider that apt chose) without passing an ASSUMED or NOT_NEEDED package.
: > "$work/status"
apt-get -s -o Dir::State::status="$work/status" -o APT::Install-Recommends=false \
  install "${WANTED[@]}" | awk '/^Inst / {print $2}' > "$work/resolved.txt"
mapfile -t resolved < "$work/resolved.txt"
[ ${#resolved[@]} -gt 0 ] || { echo "device_kit: apt resolved nothing" >&2; exit 1; }
apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
  --no-enhances "${resolved[@]}" > "$work/depends.txt"
mapfile -t packages < <(/usr/bin/python3 - "$work/resolved.txt" "$work/depends.txt" \
                          "${#WANTED[@]}" "${WANTED[@]}" "${ASSUMED[@]}" "${NOT_NEEDED[@]}" <<'PY'
import sys
resolved = set(open(sys.argv[1]).read().split())
wanted_count = int(sys.argv[3])
wanted, assumed = sys.argv[4:4 + wanted_count], set(sys.argv[4 + wanted_count:])
# apt-cache depends: a package name at column 0, then "  Depends: NAME" or " |Depends: NAME"
# (NAME or <VIRTUAL>), a virtual name followed by its providers indented by four spaces.
edges, package, virtual, kind_of_last = {}, None, False, ""
for line in open(sys.argv[2]):
    if not line.startswith(" "):
        package, virtual = line.strip(), False
        edges.setdefault(package, set())
    elif line.startswith("    "):
        if virtual and kind_of_last in ("Depends", "PreDepends"):
            edges[package].add(line.strip())
    else:
        kind, _, name = line.strip().lstrip("|").partition(": ")
        virtual, kind_of_last = name.startswith("<"), kind
        if kind in ("Depends", "PreDepends") and not virtual:
            edges[package].add(name)
packed, queue = set(), [p for p in wanted if p not in assumed]
while queue:
    p = queue.pop()
    if p in packed or p in assumed or p not in resolved:
        continue
    packed.add(p)
    queue.extend(edges.get(p, ()))
print("\n".join(sorted(packed)))
PY
)
[ ${#packages[@]} -gt 0 ] || { echo "device_kit: nothing to pack" >&2; exit 1; }

rm -rf "$kit/debs"
mkdir -p "$kit/debs"
# As root, apt's download sandbox user (_apt) may not write here; the files are only saved.
sandbox=()
[ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
(cd "$kit/debs" && apt-get download -qq "${sandbox[@]}" "${packages[@]}")
printf '%s\n' "${packages[@]}" > "$kit/debs/PACKAGES.txt"
echo "device_kit: ${#packages[@]} packages in $kit/debs ($(du -sh "$kit/debs" | cut -f1))"

# The corpus: gpu_check.sh then skips make_corpus.sh, whose sources (dict-gcide, fortunes) are
# not on the offline machine.
rm -rf "$kit/data"
if [ -f "$root/data/corpus/c4-train.00000-of-00001.json.gz" ]; then
  mkdir -p "$kit/data"
  cp -a "$root/data/corpus" "$kit/data/"
else
  echo "device_kit: no data/corpus here (run scripts/make_corpus.sh first): the kit holds" \
    "no corpus and gpu_check.sh's training step will fail on the offline machine" >&2
fi
[ ! -d "$kit/data" ] || echo "device_kit: data $(du -sh "$kit/data" | cut -f1)"

tree_kib="$(git -C "$root" ls-files -z | (cd "$root" && xargs -0 du -ck 2>/dev/null) | awk 'END {print $1}')"
kit_kib="$(du -sk "$kit" | cut -f1)"
total_mib=$(( (tree_kib + kit_kib + 1023) / 1024 ))
echo "device_kit: kit $(( (kit_kib + 1023) / 1024 )) MiB + tracked tree $(( (tree_kib + 1023) / 1024 )) MiB" \
  "= ${total_mib} MiB (limit ${limit_mib} MiB)"
if [ "$total_mib" -ge "$limit_mib" ]; then
  echo "device_kit: over the ${limit_mib} MiB limit (GUM_KIT_LIMIT_MIB)" >&2
  exit 1
fi
