#!/usr/bin/env bash
# Rebuild the embedded toy models (data/embedded/t2mv and data/embedded/i2mv) from a fresh clone, on
# CPU, one thread per run (these tiny models run fastest that way). Every model a phase starts from
# is made by an earlier command here, never read from data/embedded. The result goes to $OUT
# (default runs/embedded); data/embedded is left as it is.
#
#   bash tools/rebuild_embedded.sh            # about 25 hours on one core
#
# Phases that continue an exported model start from its fp16 model folder (loaded as float32), as the
# embedded models did. `stop_at` ends a run at a step of a longer schedule (checkpoint and export);
# `resume=latest` continues it in the same output folder. The toy world (data/toy_world_64) is
# rendered by the first run that needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
OUT="${OUT:-runs/embedded}"
VAE=runs/toy_vae_backgrounds/vae       # the decoder the phases' exports (and stage 2) used
TEXT_VAE=runs/toy_vae_colours/vae      # the same encoder, the decoder the embedded text model ships

# VAE (grey renders, then decoder only on grey + white) and the reconstructor on clean renders
python scripts/train_vae.py --config configs/toy_vae.yaml
python scripts/train_vae.py --config configs/toy_vae_backgrounds.yaml
python scripts/train_recon.py --config configs/toy_recon.yaml

# text phase 1 (eps): 1000 steps at a constant rate without EMA, then the cosine schedule with EMA to step 2200 of 3000
python scripts/train_mv.py --config configs/toy_t2mv.yaml vae.path=runs/toy_vae/vae \
    ema.enabled=false lr_scheduler.name=constant_with_warmup max_steps=15000 stop_at=1000
python scripts/train_mv.py --config configs/toy_t2mv.yaml vae.path=runs/toy_vae/vae resume=latest stop_at=2200
# text phase 2 (v-prediction), ended at step 1000 of 1200
python scripts/train_mv.py --config configs/toy_t2mv_v.yaml vae.path=runs/toy_vae/vae stop_at=1000
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v/final --vae "$VAE" \
    --reconstructor runs/toy_recon/reconstructor --out runs/t2mv_phase2 --resolution 64

# image phase 1 (min-SNR): 600 steps at a constant rate, then the cosine schedule to step 2200
python scripts/train_mv.py --config configs/toy_i2mv.yaml vae.path=runs/toy_vae/vae \
    lr_scheduler.name=constant_with_warmup max_steps=15000 stop_at=600
python scripts/train_mv.py --config configs/toy_i2mv.yaml vae.path=runs/toy_vae/vae resume=latest
python tools/export_embedded.py --task image --pipeline runs/toy_i2mv/final --vae "$VAE" \
    --reconstructor runs/toy_recon/reconstructor --out runs/i2mv_phase1 --resolution 64

# stage 2, first round: the reconstructor on these generators' single-step outputs
python scripts/train_recon.py --config configs/toy_recon.yaml inputs.source=generator generator.path=runs/t2mv_phase2 \
    reconstructor.init_from=runs/toy_recon/reconstructor output_dir=runs/toy_recon_text \
    max_steps=300 optimizer.lr=2e-4 lr_scheduler.warmup_steps=20
python scripts/train_recon.py --config configs/toy_recon.yaml inputs.source=generator generator.path=runs/i2mv_phase1 \
    generator.task=image data.background=white reconstructor.init_from=runs/toy_recon/reconstructor \
    output_dir=runs/toy_recon_image max_steps=400 optimizer.lr=2e-4 lr_scheduler.warmup_steps=20

# text phases 3-7 and image phases 2-5
python scripts/train_mv.py --config configs/toy_t2mv_v3.yaml base=runs/t2mv_phase2
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v3/final --vae "$VAE" \
    --reconstructor runs/toy_recon_text/reconstructor --out runs/t2mv_phase3 --resolution 64
python scripts/train_mv.py --config configs/toy_t2mv_v4.yaml base=runs/t2mv_phase3
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v4/final --vae "$VAE" \
    --reconstructor runs/toy_recon_text/reconstructor --out runs/t2mv_phase4 --resolution 64
python scripts/train_mv.py --config configs/toy_t2mv_v5.yaml base=runs/t2mv_phase4
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v5/final --vae "$VAE" \
    --reconstructor runs/toy_recon_text/reconstructor --out runs/t2mv_phase5 --resolution 64
python scripts/train_mv.py --config configs/toy_t2mv_v6.yaml base=runs/t2mv_phase5
python scripts/train_mv.py --config configs/toy_t2mv_v7.yaml base=runs/toy_t2mv_v6/final

python scripts/train_mv.py --config configs/toy_i2mv_v2.yaml base=runs/i2mv_phase1
python tools/export_embedded.py --task image --pipeline runs/toy_i2mv_v2/final --vae "$VAE" \
    --reconstructor runs/toy_recon_image/reconstructor --out runs/i2mv_phase2 --resolution 64
python scripts/train_mv.py --config configs/toy_i2mv_v3.yaml base=runs/i2mv_phase2
python tools/export_embedded.py --task image --pipeline runs/toy_i2mv_v3/final --vae "$VAE" \
    --reconstructor runs/toy_recon_image/reconstructor --out runs/i2mv_phase3 --resolution 64
python scripts/train_mv.py --config configs/toy_i2mv_v4.yaml base=runs/i2mv_phase3
python tools/export_embedded.py --task image --pipeline runs/toy_i2mv_v4/final --vae "$VAE" \
    --reconstructor runs/toy_recon_image/reconstructor --out runs/i2mv_phase4 --resolution 64
python scripts/train_mv.py --config configs/toy_i2mv_v5.yaml base=runs/i2mv_phase4

# stage 2, second round: on text phase 4 and image phase 3, from the first round's reconstructors
python scripts/train_recon.py --config configs/toy_recon.yaml inputs.source=generator generator.path=runs/t2mv_phase4 \
    reconstructor.init_from=runs/t2mv_phase4/reconstructor output_dir=runs/toy_recon_text_v2 \
    max_steps=400 optimizer.lr=2e-4 lr_scheduler.warmup_steps=20
python scripts/train_recon.py --config configs/toy_recon.yaml inputs.source=generator generator.path=runs/i2mv_phase3 \
    generator.task=image data.background=white reconstructor.init_from=runs/i2mv_phase3/reconstructor \
    output_dir=runs/toy_recon_image_v2 max_steps=400 optimizer.lr=2e-4 lr_scheduler.warmup_steps=20

# the text model's decoder: decoder only, weighted to the objects' colours, from the fp16 export of
# the grey + white VAE (as the embedded one was made)
python scripts/train_vae.py --config configs/toy_vae_colours.yaml vae.path=runs/t2mv_phase4/vae

# text phase 7 and image phase 5 as model folders (fp16), what text phase 8, image phase 6 and
# tools/train_on_device.sh start from. The image model keeps the grey + white decoder (results.md)
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v7/final --vae "$TEXT_VAE" \
    --reconstructor runs/toy_recon_text_v2/reconstructor --out runs/t2mv_phase7 --resolution 64 --guidance 4
python tools/export_embedded.py --task image --pipeline runs/toy_i2mv_v5/final --vae "$VAE" \
    --reconstructor runs/toy_recon_image_v2/reconstructor --out runs/i2mv_phase5 --resolution 64 \
    --timestep-spacing trailing

# text phase 8 and image phase 6: 4000 more training objects (the toy world's train_plus4000.txt)
python scripts/train_mv.py --config configs/toy_t2mv_v8.yaml
python scripts/train_mv.py --config configs/toy_i2mv_v6.yaml

# text phase 8 and image phase 6 as model folders (fp16), what text and image phase 9 start from
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v8/final --vae runs/t2mv_phase7/vae \
    --reconstructor runs/t2mv_phase7/reconstructor --out runs/t2mv_phase8 --resolution 64 --guidance 2 \
    --sampler dpmsolver++ --steps 20
python tools/export_embedded.py --task image --pipeline runs/toy_i2mv_v6/final --vae runs/i2mv_phase5/vae \
    --reconstructor runs/i2mv_phase5/reconstructor --out runs/i2mv_phase6 --resolution 64 \
    --timestep-spacing trailing --sampler dpmsolver++ --steps 20
# text phase 9: 500 more steps on the phase-8 recipe (step 500 of a 700-step schedule); image phase
# 9: 800 steps with the input view given clean (model.clean_input_view)
python scripts/train_mv.py --config configs/toy_t2mv_v9.yaml
python scripts/train_mv.py --config configs/toy_i2mv_v9.yaml
# text phase 9 as a model folder, what text phase 11 starts from: 800 more steps on a fresh schedule
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v9/final \
    --reconstructor runs/t2mv_phase8/reconstructor --out runs/t2mv_phase9 --resolution 64 --guidance 2 \
    --sampler dpmsolver++ --steps 20
python scripts/train_mv.py --config configs/toy_t2mv_v11.yaml
# text phase 11 as a model folder, what text phase 12 starts from: 1000 steps on 8-view windows
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v11/final \
    --reconstructor runs/t2mv_phase9/reconstructor --out runs/t2mv_phase11 --resolution 64 --guidance 1.5 \
    --sampler dpmsolver++ --steps 20
python scripts/train_mv.py --config configs/toy_t2mv_v12.yaml

# the two model folders (fp16, DPM-Solver++ at 20 steps; --share-with links any component identical
# to the text folder's)
python tools/export_embedded.py --task text --pipeline runs/toy_t2mv_v12/final \
    --reconstructor runs/t2mv_phase9/reconstructor --out "$OUT/t2mv" --resolution 64 --guidance 1.5 \
    --sampler dpmsolver++ --steps 20
python tools/export_embedded.py --task image --pipeline runs/toy_i2mv_v9/final --vae runs/i2mv_phase6/vae \
    --reconstructor runs/i2mv_phase6/reconstructor --out "$OUT/i2mv" --resolution 64 \
    --timestep-spacing trailing --sampler dpmsolver++ --steps 20 --clean-input-view --share-with "$OUT/t2mv"
echo "rebuilt: $OUT/t2mv $OUT/i2mv (compare with data/embedded)"
