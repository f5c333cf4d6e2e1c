# Compiler flags shared by every qkit target.
#  -ffp-contract=off: no silent FMA, so the scalar reference and every SIMD target perform
#                     the same IEEE operations (docs/numerics.md). Never -ffast-math.
function(qkit_apply_flags target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wno-unused-parameter -ffp-contract=off -fno-fast-math -fno-math-errno)
  if(QKIT_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  endif()
endfunction()
