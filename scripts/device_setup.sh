# shellcheck shell=bash
# Makes the kit of scripts/device_kit.sh usable on an offline GPU machine, which has no network
# and none of our Debian packages. Source it, from bash, in the repository root:
#   source scripts/device_setup.sh
# It unpacks every .deb of .device-kit/debs into a prefix with `dpkg -x` (default /opt/gum-deps;
# GUM_DEPS_PREFIX overrides), makes the links Debian's maintainer scripts would make
# (update-alternatives for OpenBLAS and Open MPI), points the packages' pkg-config files at the
# prefix, exports what CMake, the compiler, the dynamic linker, pkg-config and Open MPI need to
# find them there, and copies the kit's corpus to data/corpus. Idempotent: a second source
# unpacks nothing again and adds nothing twice to a search path.
# Nothing is installed into / : the image's own libraries stay as they are.

gum_device_setup() {
  local root kit prefix multiarch lib
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  kit="$root/.device-kit"
  prefix="${GUM_DEPS_PREFIX:-/opt/gum-deps}"
  multiarch=x86_64-linux-gnu   # the kit holds Debian amd64 packages
  lib="$prefix/usr/lib/$multiarch"

  if ! ls "$kit"/debs/*.deb > /dev/null 2>&1; then
    echo "device_setup: no .deb files in $kit/debs (run scripts/device_kit.sh where apt works)" >&2
    return 1
  fi
  command -v dpkg > /dev/null ||
    { echo "device_setup: dpkg is missing: it unpacks the kit's packages" >&2; return 1; }

  # ---- unpack (again only when the kit's package list changed) ----
  if ! cmp -s "$kit/debs/PACKAGES.txt" "$prefix/.gum-kit-packages.txt"; then
    # Only a folder this script made (it holds the stamp) or an empty one is replaced.
    if [ -d "$prefix" ] && [ ! -f "$prefix/.gum-kit-packages.txt" ] && [ -n "$(ls -A "$prefix")" ]; then
      echo "device_setup: $prefix exists and was not made by device_setup.sh; set GUM_DEPS_PREFIX" >&2
      return 1
    fi
    rm -rf "$prefix"
    mkdir -p "$prefix"
    local deb
    for deb in "$kit"/debs/*.deb; do
      dpkg -x "$deb" "$prefix" || { echo "device_setup: dpkg -x $deb failed" >&2; return 1; }
    done

    # The links update-alternatives makes in the packages' postinst scripts, which dpkg -x
    # does not run: LINK TARGET, both as installed under /usr, made relative to the prefix.
    local alternatives=(
      "lib/$multiarch/libblas.so.3"             "lib/$multiarch/openblas-pthread/libblas.so.3"
      "lib/$multiarch/liblapack.so.3"           "lib/$multiarch/openblas-pthread/liblapack.so.3"
      "lib/$multiarch/libopenblas.so.0"         "lib/$multiarch/openblas-pthread/libopenblas.so.0"
      "lib/$multiarch/libblas.so"               "lib/$multiarch/openblas-pthread/libblas.so"
      "lib/$multiarch/liblapack.so"             "lib/$multiarch/openblas-pthread/liblapack.so"
      "lib/$multiarch/libopenblas.so"           "lib/$multiarch/openblas-pthread/libopenblas.so"
      "include/$multiarch/cblas.h"              "include/$multiarch/openblas-pthread/cblas.h"
      "include/$multiarch/cblas-openblas.h"     "include/$multiarch/openblas-pthread/cblas.h"
      "include/$multiarch/f77blas.h"            "include/$multiarch/openblas-pthread/f77blas.h"
      "include/$multiarch/openblas_config.h"    "include/$multiarch/openblas-pthread/openblas_config.h"
      "include/$multiarch/mpi"                  "lib/$multiarch/openmpi/include"
      "lib/$multiarch/libmpi.so"                "lib/$multiarch/openmpi/lib/libmpi.so"
      "lib/$multiarch/pkgconfig/mpi.pc"         "lib/$multiarch/pkgconfig/ompi.pc"
      "lib/$multiarch/pkgconfig/mpi-c.pc"       "lib/$multiarch/pkgconfig/ompi-c.pc"
      "bin/mpirun"                              "bin/mpirun.openmpi"
      "bin/mpiexec"                             "bin/mpiexec.openmpi"
      "bin/mpicc"                               "bin/mpicc.openmpi"
      "bin/mpicxx"                              "bin/mpicxx.openmpi"
      "bin/mpic++"                              "bin/mpic++.openmpi"
    )
    local i link target
    for ((i = 0; i < ${#alternatives[@]}; i += 2)); do
      link="$prefix/usr/${alternatives[i]}"
      target="$prefix/usr/${alternatives[i + 1]}"
      [ -e "$target" ] || { echo "device_setup: alternative target missing: $target" >&2; return 1; }
      mkdir -p "$(dirname "$link")"
      ln -sfn "$target" "$link"
    done

    # zlib1g-dev's libz.so points at the runtime library of zlib1g, which the image has and
    # the kit leaves out: point it at the image's copy.
    local zlib
    zlib="$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')"
    [ -n "$zlib" ] || zlib="$(ls /usr/lib/$multiarch/libz.so.1 /lib/$multiarch/libz.so.1 2>/dev/null | head -1)"
    [ -n "$zlib" ] || { echo "device_setup: the image has no libz.so.1" >&2; return 1; }
    ln -sfn "$zlib" "$lib/libz.so"

    # pkg-config files name /usr: rewrite their prefix (and any absolute /usr path) to ours.
    local pc
    for pc in "$lib"/pkgconfig/*.pc "$prefix"/usr/share/pkgconfig/*.pc \
              "$lib"/openmpi/lib/pkgconfig/*.pc; do
      [ -f "$pc" ] && [ ! -L "$pc" ] || continue
      sed -i -E "s#^([a-z_]+)=/usr(/|\$)#\\1=$prefix/usr\\2#" "$pc"
    done
    cp "$kit/debs/PACKAGES.txt" "$prefix/.gum-kit-packages.txt"
    echo "device_setup: unpacked $(wc -l < "$kit/debs/PACKAGES.txt") packages into $prefix"
  fi

  # ---- environment ----
  gum_prepend() {  # gum_prepend VARIABLE DIR: DIR first in the colon list, once
    local current="${!1:-}"
    case ":$current:" in *":$2:"*) return ;; esac
    export "$1=$2${current:+:$current}"
  }
  gum_prepend PATH "$prefix/usr/bin"
  # find_package configs (lib/<arch>/cmake, share/cmake), find_library, find_path and
  # FindPkgConfig (which adds <prefix>/lib/<arch>/pkgconfig) all search below this prefix.
  gum_prepend CMAKE_PREFIX_PATH "$prefix/usr"
  gum_prepend PKG_CONFIG_PATH "$prefix/usr/share/pkgconfig"
  gum_prepend PKG_CONFIG_PATH "$lib/pkgconfig"
  # The dynamic linker: the unpacked libraries (ld also reads this for a library's own needs
  # while linking, e.g. libopenblas.so.0 -> libgfortran.so.5), Open MPI's and PMIx's private
  # library folders.
  gum_prepend LD_LIBRARY_PATH "$lib/pmix2/lib"
  gum_prepend LD_LIBRARY_PATH "$lib/openmpi/lib"
  gum_prepend LD_LIBRARY_PATH "$lib"
  # Open MPI finds its plugins, help texts and wrapper data below OPAL_PREFIX; its sysconfdir
  # (/etc/openmpi) is absolute in Debian's build, so it is named too. PMIx likewise.
  export OPAL_PREFIX="$prefix/usr"
  export OPAL_SYSCONFDIR="$prefix/etc/openmpi"
  export PMIX_PREFIX="$lib/pmix2" PMIX_DATADIR="$lib/pmix2/share"
  export PMIX_PKGDATADIR="$lib/pmix2/share/pmix"
  export PMIX_MCA_mca_base_component_path="$lib/pmix2/lib/pmix"
  # Commands there may run as root, which mpirun refuses unless told.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export GUM_DEPS_PREFIX="$prefix"

  # NCCL: CMake looks beside the CUDA toolkit; where the image has NCCL only as PyTorch's
  # wheel (nvidia/nccl: libnccl.so.2 and nccl.h, no libnccl.so), give it the missing link.
  if ! ls /usr/local/cuda/lib64/libnccl.so /usr/local/cuda/lib/libnccl.so > /dev/null 2>&1 &&
     ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so '; then
    local nccl_lib
    nccl_lib="$(python3 -c 'import glob, nvidia; print(next(iter(sorted(p for d in nvidia.__path__
                 for p in glob.glob(d + "/**/libnccl.so.2", recursive=True))), ""))' 2>/dev/null)"
    if [ -n "$nccl_lib" ] && [ -f "$(dirname "$nccl_lib")/../include/nccl.h" ]; then
      mkdir -p "$prefix/nccl/lib"
      ln -sfn "$nccl_lib" "$prefix/nccl/lib/libnccl.so"
      ln -sfn "$(cd "$(dirname "$nccl_lib")/../include" && pwd)" "$prefix/nccl/include"
      gum_prepend CMAKE_PREFIX_PATH "$prefix/nccl"
      gum_prepend LD_LIBRARY_PATH "$(dirname "$nccl_lib")"
      echo "device_setup: NCCL from $nccl_lib"
    else
      echo "device_setup: no NCCL found (CUDA folder, ldconfig, python's nvidia wheels)" >&2
    fi
  fi

  # ---- the kit's corpus, where make_corpus.sh would write it ----
  if [ -d "$kit/data/corpus" ]; then
    mkdir -p "$root/data/corpus"
    cp -a -n "$kit"/data/corpus/* "$root/data/corpus/"
  fi
  unset -f gum_prepend
  echo "device_setup: dependencies from $prefix; corpus in $root/data/corpus"
}

gum_device_setup
