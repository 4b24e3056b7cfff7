# CUDA emulation: the libraries the CUDA backend calls, as shims over the host's own: cuBLAS and
# cuSOLVER over OpenBLAS/LAPACKE (gum_cuda_emu_libs), NCCL over MPI (gum_cuda_emu_nccl, when MPI
# is found). Included by this folder's CMakeLists.txt and by tests/cuda_emu, whichever comes first.
include_guard(GLOBAL)

add_library(gum_cuda_emu_libs STATIC ${CMAKE_CURRENT_LIST_DIR}/src/cublas.cpp ${CMAKE_CURRENT_LIST_DIR}/src/cusolver.cpp)
target_include_directories(gum_cuda_emu_libs SYSTEM PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
target_include_directories(gum_cuda_emu_libs PRIVATE ${CBLAS_INCLUDE_DIR} ${LAPACKE_INCLUDE_DIR})
target_link_libraries(gum_cuda_emu_libs PRIVATE gum_core gum_cuda_emu_runtime ${LAPACKE_LIBRARY} LAPACK::LAPACK BLAS::BLAS)

if(GUM_HAVE_MPI)
  add_library(gum_cuda_emu_nccl STATIC ${CMAKE_CURRENT_LIST_DIR}/src/nccl.cpp)
  target_include_directories(gum_cuda_emu_nccl SYSTEM PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
  target_link_libraries(gum_cuda_emu_nccl PUBLIC MPI::MPI_C PRIVATE gum_core gum_cuda_emu_runtime)
  # mpi.h included from C++ would pull in the deprecated C++ bindings (and need libmpi_cxx).
  target_compile_definitions(gum_cuda_emu_nccl PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
endif()
