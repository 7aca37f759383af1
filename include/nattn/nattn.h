// Umbrella header of the nattn C++ API.
#pragma once

#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"
#include "nattn/problem.h"
#include "nattn/semantics.h"
#include "nattn/tensor.h"
#include "nattn/version.h"
