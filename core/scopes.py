"""The name of each forward/backward component: the profiler scope core.function opens around it, and the
component a suite times and counts. Defined once here; code names a component by its constant."""
FWD_FROZEN = "fwd.frozen"              # x W0ᵀ
FWD_LORA = "fwd.lora"                  # s·(x Aᵀ) Bᵀ
GRAD_H = "bwd.grad_h"                  # G_h = s·G_y B (with double-LoRA: G_y [s·B | C])
GRAD_B = "bwd.grad_B"                  # G_B = s·G_yᵀ (x Aᵀ)
GRAD_A = "bwd.grad_A"                  # G_A = G_hᵀ x
GRAD_X_LORA = "bwd.grad_x_lora"        # G_h A
GRAD_X_FROZEN = "bwd.grad_x_frozen"    # G_y W0, or CE-LoRA's kept-column product + T·A0
SELECTION = "selection"                # one index refresh: scores, top-k, (cached) row gather

COMPONENTS = (FWD_FROZEN, FWD_LORA, GRAD_H, GRAD_B, GRAD_A, GRAD_X_LORA, GRAD_X_FROZEN)   # one layer's fwd+bwd
