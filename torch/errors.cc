#include "errors.h"

#include <c10/util/Exception.h>

namespace qkit::torch_ext {

void RethrowAsTorchError() {
  try {
    throw;
  } catch (const qkit::OutOfRange& e) {
    TORCH_CHECK_INDEX(false, e.what());
  } catch (const qkit::InvalidArgument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  } catch (const qkit::DataLoss& e) {
    TORCH_CHECK_VALUE(false, e.what());
  } catch (const qkit::FailedPrecondition& e) {
    TORCH_CHECK(false, e.what());
  } catch (const qkit::Error& e) {
    TORCH_CHECK(false, e.what());
  }
  TORCH_CHECK(false, "qkit: internal error: RethrowAsTorchError called outside a catch block");
}

}  // namespace qkit::torch_ext
