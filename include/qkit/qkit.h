// Umbrella header: the whole public C++ API of qkit.
#ifndef QKIT_QKIT_H_
#define QKIT_QKIT_H_

#include "qkit/context.h"
#include "qkit/error.h"
#include "qkit/observers/observers.h"
#include "qkit/ops/fake_quant.h"
#include "qkit/ops/minmax.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

#endif  // QKIT_QKIT_H_
