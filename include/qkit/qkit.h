// Umbrella header: the whole public C++ API of qkit.
#ifndef QKIT_QKIT_H_
#define QKIT_QKIT_H_

#include "qkit/calib/entropy.h"
#include "qkit/calib/l2_search.h"
#include "qkit/calib/mse.h"
#include "qkit/calib/percentile.h"
#include "qkit/context.h"
#include "qkit/error.h"
#include "qkit/observers/histogram_calibrator.h"
#include "qkit/observers/histogram_observer.h"
#include "qkit/observers/observers.h"
#include "qkit/ops/fake_quant.h"
#include "qkit/ops/histogram.h"
#include "qkit/ops/minmax.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

#endif  // QKIT_QKIT_H_
