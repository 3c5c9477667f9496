// SPDX-License-Identifier: Apache-2.0
// A program written for the reference blksnap UAPI compiles against ours as
// C and as C++ (the build is the first half of the test) and sees the
// reference's values (reference_program.c).
#include <gtest/gtest.h>

extern "C" int reference_program_check(void);
extern "C" int reference_program_check_cxx(void);

TEST(UapiReference, AReferenceProgramCompilesAsCAndSeesTheReferenceValues) {
  EXPECT_EQ(reference_program_check(), 0) << "the number is the failed check in reference_program.c";
}

TEST(UapiReference, AReferenceProgramCompilesAsCxxAndSeesTheReferenceValues) {
  EXPECT_EQ(reference_program_check_cxx(), 0)
      << "the number is the failed check in reference_program.c";
}
