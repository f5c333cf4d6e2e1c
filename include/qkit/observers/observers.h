// Umbrella header for the running-statistics observers (docs/observers.md).
#ifndef QKIT_OBSERVERS_OBSERVERS_H_
#define QKIT_OBSERVERS_OBSERVERS_H_

#include "qkit/observers/minmax_observer.h"
#include "qkit/observers/moving_average_observer.h"
#include "qkit/observers/passive_observer.h"
#include "qkit/observers/range_stats.h"

#endif  // QKIT_OBSERVERS_OBSERVERS_H_
