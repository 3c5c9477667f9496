// SPDX-License-Identifier: Apache-2.0
// The reference program again, compiled as C++.
#define REFERENCE_PROGRAM_CHECK reference_program_check_cxx
#include "reference_program.c"
