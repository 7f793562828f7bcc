// Catch2's main lives in this one translation unit; every test program links it.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
