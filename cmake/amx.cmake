# Intel AMX in a native build. -march=native compiles ggml's AMX matrix kernels in on a CPU that has AMX (Sapphire
# Rapids and later), and in the pinned llama.cpp those kernels crash: they build their tile configuration on the
# stack, the compiler (GCC 12, Debian 12's, here) drops the stores of its rows and columns before the
# _tile_loadconfig that reads them, and the first batched prompt evaluation of a Q4_0/Q8_0 model dies on a general
# protection fault or an illegal instruction, llama.cpp's own tools included (llama.cpp pull request 26954, open,
# moves the configuration out of the stack and asks for the tile permission per thread). A stand-alone program set
# up the same way does not show it, so no probe can tell a good build from a bad one: AMX stays out (-mno-amx-*,
# ggml then uses its AVX-512 kernels) unless LLAMA_OCI_AMX=ON asks for it, for a llama.cpp or compiler without the
# problem.
#
# Included from CMakeLists.txt; a build of llama.cpp's own tools from the same source gets the same flags with
# cmake -S deps/llama.cpp -DCMAKE_PROJECT_INCLUDE=<this file> ..., so that both sides of a benchmark match.
include_guard(GLOBAL)

option(LLAMA_OCI_AMX "Intel AMX kernels in a native build (they crash in the pinned llama.cpp; see cmake/amx.cmake)" OFF)

if (NOT LLAMA_OCI_AMX AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # Explicit -mno-* flags win over what -march=native turns on, wherever they are on the command line.
  string(APPEND CMAKE_C_FLAGS " -mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
  string(APPEND CMAKE_CXX_FLAGS " -mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
  set(cpu_flags "")
  if (EXISTS "/proc/cpuinfo")
    file(STRINGS "/proc/cpuinfo" cpu_flags REGEX "^flags" LIMIT_COUNT 1)
  endif()
  if (cpu_flags MATCHES "amx_tile")
    message(STATUS "llama-oci: this CPU has Intel AMX; its kernels are left out of the build (LLAMA_OCI_AMX=ON builds them; see cmake/amx.cmake)")
  endif()
endif()
