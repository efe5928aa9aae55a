// Loss kernels for the generic instruction set (templates in loss_isa.h).

#include "loss.h"
#include "vec/isa_generic.h"
#include "loss_isa.h"

