#!/usr/bin/env bash
# The study's sweeps, as run for the tables of experiments/RESULTS.md (sequential; each finished run is skipped on a re-run).
#
#   bash experiments/study.sh whisper_ptq|whisper_stage_table|whisper_esc|whisper_sentences|whisper_prompts|whisper_prompts_split|whisper_w4a4_token|whisper_w4a4_tokengroup|keywords|keywords_360|keywords_360_hp|keywords_360_w8a8|keywords_rotation|keywords_bc_w8a8|keywords_log2|keywords_token|keywords_esc|keywords_ptq|keywords_bc|whisper_bc|sensitivity [OUT]
#
# Data: the bundled sentences_small evaluation split (Whisper), a generated keyword set split by voice
# (KEYWORDS, from `python -m esc.data.tts keywords ...`), and for Whisper's ESC runs a larger calibration folder
# (WHISPER_CAL: generated sentences that share no sentence and no voice with the bundled evaluation split), and a
# generated sentence set (SENTENCES, from `python -m esc.data.tts sentences --n-sentences 400 ...`), and the real
# Asterisk prompts (PROMPTS, the prompts/ folder of `python -m esc.data.asterisk --out DIR`; PROMPTS_SPLIT, the same
# with 100 of them moved to a calibration split: `... --out DIR --calibration-prompts 100 --seed 0`), and
# KEYWORDS_PICO: the keyword set with Pico's two voices added to its calibration split (`python -m esc.data.tts
# keywords ... --voices <the 13 built-in> pico:en-US pico:en-GB`; the same evaluation split byte for byte).
set -euo pipefail
part=${1:?part: whisper_ptq | whisper_stage_table | whisper_esc | whisper_sentences | whisper_prompts | whisper_prompts_split | whisper_w4a4_token | whisper_w4a4_tokengroup | keywords | keywords_360 | keywords_360_hp | keywords_360_w8a8 | keywords_rotation | keywords_bc_w8a8 | keywords_log2 | keywords_token | keywords_esc | keywords_ptq | keywords_bc | whisper_bc | sensitivity}
out=${2:-study}
KEYWORDS=${KEYWORDS:-/work/gen/keywords_v2}
WHISPER_CAL=${WHISPER_CAL:-/work/study/data/sentences_cal52/calibration}
SENTENCES=${SENTENCES:-/work/gen/sentences400}
PROMPTS=${PROMPTS:-/work/gen/asterisk/prompts}
PROMPTS_SPLIT=${PROMPTS_SPLIT:-/work/gen/asterisk_split/prompts}
KEYWORDS_PICO=${KEYWORDS_PICO:-/work/gen/keywords_pico}
run() { python -m esc.run -m logger=csv out_dir="$out" "$@"; }
# wav2vec2 W8A8 with 512 calibration clips, MSE and ESC ($esc512), as keywords_esc
w8a8_512() {
  run threads=1 "$@" $kws_data dataset.calibration_size=512 quant=w8a8 seed=0,1,2 calibrator=mse
  run threads=1 "$@" $kws_data dataset.calibration_size=512 quant=w8a8 seed=0,1,2 $esc512
}
# evaluation on the real prompts, in a folder of its own (their dataset is "folder" too), so their scales files can be found
run_prompts() { python -m esc.run -m logger=csv out_dir="$out/prompts" dataset=folder dataset.path="$PROMPTS" "$@"; }
kws_data="dataset=folder dataset.path=$KEYWORDS dataset.batch_size=16"
kws="$kws_data dataset.calibration_size=128"
# every table was measured with CMA-ES's sampling seed 0 (before it followed the run's seed), whatever the run's seed
esc="calibrator=esc calibrator.seed=0"
# ESC on Whisper with about 10 calibration windows: one resampled fitness window, validation on the last batch
esc_whisper_options="calibrator.fitness_batches=1 calibrator.resample=true calibrator.validation_batches=1"
esc_whisper_options="$esc_whisper_options calibrator.population_batch=true calibrator.population_chunk=6"
esc_whisper="$esc $esc_whisper_options calibrator.max_evals=120"
esc_kws="$esc calibrator.validation_batches=2 calibrator.population_batch=true"
# wav2vec2: one forward per candidate (batching the population is slower for it) and 600 evaluations (49 scales:
# at 150, about 8 generations, the search barely left its start: W8A4 fidelity 0.905 +- 0.094 against 0.804 +- 0.032)
esc_w2v="$esc calibrator.validation_batches=2 calibrator.max_evals=600"
# ESC with 512 calibration clips: validation on 8 batches, CMA-ES's sampling seed following the run's
esc512="calibrator=esc calibrator.max_evals=600 calibrator.validation_batches=8"
log2='model.rules=[{match:"*.probs_quantizer",grid:log2}]'
sentence_cal="dataset.calibration_split=$SENTENCES/calibration dataset.calibration_size=null"
# rotation with Whisper's convolutions, queries and keys rotated too; rotation+gptq.yaml lists no stage options, so
# there they are added (+)
rotation_all="ptq=rotation ptq.stages.0.convolutions=true ptq.stages.0.queries_keys=true"
rotation_all_gptq="ptq=rotation+gptq +ptq.stages.0.convolutions=true +ptq.stages.0.queries_keys=true"

case $part in
  whisper_ptq)  # PTQ stages x {W4A8, W4A4} with the MSE calibrator on the real Whisper tiny.en
    run threads=2 quant=w4a8_g64,w4a4_g64 calibrator=mse \
        ptq=none,gptq,smoothquant,rotation,adaround,smoothquant+gptq,rotation+gptq ;;
  whisper_stage_table)  # Whisper tiny.en (bundled data): every stage at W4A8 with ESC (its budget-0 point is the MSE
    # calibrator on the same data and stage), the stages not in whisper_w4a4_tokengroup at W4A4 with token groups,
    # the per-tensor W4A4 stages not in whisper_ptq, and every stage at W4A4 with token groups and ESC
    run threads=1 quant=w4a8_g64 $esc calibrator.max_evals=150 'budget_curve=[0]' \
        ptq=none,gptq,smoothquant,smoothquant+gptq,rotation,adaround
    run threads=1 quant=w4a4_g64_tokengroup calibrator=mse "$log2" ptq=smoothquant,adaround
    run threads=1 quant=w4a4_g64 calibrator=mse ptq=rotation,smoothquant+gptq,adaround
    # W4A4 with token groups, every stage with ESC (the MSE column: the runs above and whisper_w4a4_tokengroup's);
    # 120 evaluations with the population batched, as the token-group search on the generated sentences
    esc_tg="quant=w4a4_g64_tokengroup $esc calibrator.max_evals=120 calibrator.population_batch=true"
    esc_tg="$esc_tg calibrator.population_chunk=6"
    run threads=1 $esc_tg "$log2" ptq=adaround,none,smoothquant+gptq,smoothquant,gptq
    run threads=1 $esc_tg "$log2" $rotation_all
    run threads=1 $esc_tg "$log2" $rotation_all_gptq ;;
  whisper_prompts)  # the W8A8 scales of every calibrator of a whisper_sentences run (its OUT: third argument), each
    # evaluated on the real Asterisk prompts (no new calibration: calibrator=saved)
    scales=$(find "${3:?the OUT folder of whisper_sentences}" -path "*/whisper_tiny_en/folder/w8a8/*" -name scales.pt \
        | sort | paste -sd,)
    run_prompts threads=1 $sentence_cal quant=w8a8 calibrator=saved calibrator.path="$scales" ;;
  whisper_esc)  # ESC on the real Whisper tiny.en: 52 calibration clips (10 windows), validation on the last batch
    # (a repeated key in a sweep keeps its last value: 200 evaluations here)
    run threads=2 dataset.calibration_split="$WHISPER_CAL" dataset.calibration_size=null $esc_whisper \
        calibrator.max_evals=200 "${@:3}" ;;
  whisper_sentences)  # every calibrator on the generated sentences: 100 calibration clips, the first 60 evaluation
    # clips; bit widths from the third argument (default all four), e.g. `whisper_sentences OUT w8a8,w4a8_g64`
    sents="dataset=folder dataset.path=$SENTENCES dataset.eval_limit=60 dataset.calibration_size=null"
    sents="$sents quant=${3:-w8a8,w8a4,w4a8_g64,w4a4_g64}"
    run threads=1 $sents calibrator=mse,minmax,percentile,entropy seed=0
    run threads=1 $sents $esc_whisper seed=0,1,2 ;;
  whisper_prompts_split)  # W8A8 calibrated on real speech: 100 of the Asterisk prompts (no sentence shared with the
    # other 266, on which it is evaluated; one speaker in both), MSE and ESC
    split="dataset=folder dataset.path=$PROMPTS_SPLIT dataset.calibration_size=null quant=w8a8"
    run threads=1 $split calibrator=mse seed=0
    run threads=1 $split $esc_whisper seed=0,1,2
    # two more searches with CMA-ES's sampling seed following the run's (seed 0 would repeat the first)
    run threads=1 $split calibrator=esc $esc_whisper_options calibrator.max_evals=120 seed=1,2 ;;
  whisper_w4a4_token)  # W4A4 with per-token Linear/Conv inputs after rotation+GPTQ: uniform against log2 softmax
    # probabilities (bundled data, MSE; ESC with log2), then MSE with log2 on the generated sentences
    run threads=1 quant=w4a4_g64_token ptq=rotation+gptq calibrator=mse
    run threads=1 quant=w4a4_g64_token ptq=rotation+gptq calibrator=mse "$log2"
    run threads=1 quant=w4a4_g64_token ptq=rotation+gptq $esc calibrator.max_evals=150 "$log2"
    run threads=1 dataset=folder dataset.path="$SENTENCES" dataset.eval_limit=60 dataset.calibration_size=null \
        quant=w4a4_g64_token ptq=rotation+gptq calibrator=mse "$log2"
    # the convolutions' input channels rotated too (Whisper's conv1 and conv2)
    conv_rotation="quant=w4a4_g64_token ptq=rotation+gptq +ptq.stages.0.convolutions=true"
    run threads=1 $conv_rotation calibrator=mse "$log2"
    run threads=1 $conv_rotation $esc calibrator.max_evals=150 "$log2"
    run threads=2 dataset=folder dataset.path="$SENTENCES" dataset.eval_limit=60 dataset.calibration_size=null \
        $conv_rotation calibrator=mse "$log2" ;;
  whisper_w4a4_tokengroup)  # W4A4 with 4-bit inputs in groups of 64 features per token after rotation+GPTQ, log2
    # probabilities, calibrated on the generated calibration sentences; evaluated on the generated sentences, on the
    # real Asterisk prompts (PROMPTS, from `python -m esc.data.asterisk`) and on the bundled set. One ESC search (on
    # the prompts run) is evaluated on the other two with calibrator=saved, as is the prompts run's MSE on the bundled set.
    conv="ptq=rotation+gptq +ptq.stages.0.convolutions=true"
    chain="quant=w4a4_g64_tokengroup $rotation_all_gptq"
    sents="dataset=folder dataset.path=$SENTENCES dataset.eval_limit=60 dataset.calibration_size=null"
    run threads=1 $sents quant=w4a4_g64_tokengroup $conv calibrator=mse "$log2"
    run threads=1 $sents quant=w4a4_g64_token $conv +ptq.stages.0.queries_keys=true calibrator=mse "$log2"
    run threads=1 $sents $chain calibrator=mse "$log2"
    run threads=1 $sents $chain calibrator=mse \
        'model.rules=[{match:"*.probs_quantizer",grid:log2},{match:"*.value_quantizer",granularity:token,symmetric:false}]'
    run threads=1 $chain calibrator=mse "$log2"  # bundled, on its own 16 calibration clips; other stages there:
    run threads=1 quant=w4a4_g64_tokengroup calibrator=mse "$log2" ptq=none,gptq,smoothquant+gptq
    run threads=1 quant=w4a4_g64_tokengroup calibrator=mse "$log2" $rotation_all
    run_prompts threads=1 $sentence_cal $chain "$log2" calibrator=mse
    run_prompts threads=1 $sentence_cal $chain "$log2" $esc_whisper seed=0
    esc_scales=$(find "$out/prompts" -path "*/esc/*" -name scales.pt | head -1)
    mse_scales=$(find "$out/prompts" -path "*/mse/*" -name scales.pt | head -1)
    run threads=1 $sents $chain "$log2" calibrator=saved calibrator.path="$esc_scales"
    run threads=1 $sentence_cal $chain "$log2" calibrator=saved calibrator.path="$esc_scales","$mse_scales" ;;
  keywords_token)  # per-token W4A4 on the trained keyword models: minmax, MSE and ESC, uniform and log2 probabilities
    run threads=1 model=wav2vec2_kws,ast_kws $kws quant=w4a4_g64_token calibrator=mse,minmax seed=0
    run threads=1 model=wav2vec2_kws,ast_kws $kws quant=w4a4_g64_token calibrator=mse seed=0 "$log2"
    run threads=1 model=wav2vec2_kws $kws quant=w4a4_g64_token $esc_w2v seed=0,1,2
    run threads=1 model=ast_kws $kws quant=w4a4_g64_token $esc_kws seed=0,1,2
    run threads=1 model=wav2vec2_kws,ast_kws $kws quant=w4a4_g64_token calibrator=mse seed=1,2 ;;
  keywords)  # every calibrator x bit width on the trained keyword models; ESC with three seeds
    run threads=1 model=ast_kws,wav2vec2_kws $kws quant=w8a8,w8a4,w4a8_g64,w4a4_g64 seed=0 \
        calibrator=minmax,percentile,mse,entropy
    run threads=1 model=ast_kws $kws quant=w8a8,w8a4,w4a8_g64,w4a4_g64 seed=0,1,2 $esc_kws
    run threads=1 model=wav2vec2_kws $kws quant=w8a8,w8a4,w4a8_g64,w4a4_g64 seed=0,1,2 $esc_w2v
    # W8A4, where ESC and MSE are close on wav2vec2: five seeds of each
    run threads=1 model=wav2vec2_kws $kws quant=w8a4 seed=3,4 $esc_w2v
    run threads=1 model=wav2vec2_kws $kws quant=w8a4 seed=1,2,3,4 calibrator=mse ;;
  keywords_360)  # a first look at the checkpoints trained on 360 clips per word: W8A8 and W8A4, MSE and ESC
    run threads=1 model=ast_kws_360,ast_kws_360_e80,wav2vec2_kws_360 $kws quant=w8a8,w8a4 seed=0,1,2 calibrator=mse
    run threads=1 model=ast_kws_360,ast_kws_360_e80 $kws quant=w8a8,w8a4 seed=0,1,2 $esc_kws
    run threads=1 model=wav2vec2_kws_360 $kws quant=w8a8,w8a4 seed=0,1,2 $esc_w2v
    w8a8_512 model=wav2vec2_kws_360 ;;
  keywords_360_w8a8)  # wav2vec2_kws_360 at W8A8: ESC narrowed to the feature-encoder convolution inputs, and both
    # calibrators drawing their clips from a calibration split with two more (female HMM) voices
    conv='calibrator.search=["*conv_layers.*.conv.input_quantizer"]'
    run threads=1 model=wav2vec2_kws_360 $kws quant=w8a8 seed=0,1,2 $esc_w2v "$conv"
    pico="dataset=folder dataset.path=$KEYWORDS_PICO dataset.batch_size=16 dataset.calibration_size=128"
    run threads=1 model=wav2vec2_kws_360 $pico quant=w8a8 seed=0,1,2 calibrator=mse
    run threads=1 model=wav2vec2_kws_360 $pico quant=w8a8 seed=0,1,2 $esc_w2v ;;
  keywords_360_hp)  # the same look at the wav2vec2 trained behind a 300 Hz high-pass (its checkpoint filters inputs)
    hp=wav2vec2_kws_360_hp,wav2vec2_kws_360_hp_e40
    run threads=1 model=$hp $kws quant=w8a8 seed=0,1,2 calibrator=mse
    run threads=1 model=$hp $kws quant=w8a8 seed=0,1,2 $esc_w2v
    run threads=1 model=wav2vec2_kws_360_hp $kws quant=w8a4 seed=0,1,2 calibrator=mse
    run threads=1 model=wav2vec2_kws_360_hp $kws quant=w8a4 seed=0,1,2 $esc_w2v
    w8a8_512 model=$hp
    # with guarded bias correction after the calibrator
    run threads=1 model=wav2vec2_kws_360_hp $kws quant=w8a8 seed=0,1,2 calibrator=mse ptq=bias_correction
    run threads=1 model=wav2vec2_kws_360_hp $kws quant=w8a8 seed=0,1,2 $esc_w2v ptq=bias_correction ;;
  keywords_rotation)  # wav2vec2 W8A8 with the feature encoder's convolution inputs rotated too (every calibrator)
    rot="ptq=rotation ptq.stages.0.convolutions=true"
    run threads=1 model=wav2vec2_kws $kws quant=w8a8 seed=0 calibrator=minmax,percentile,entropy $rot
    run threads=1 model=wav2vec2_kws $kws quant=w8a8 seed=0,1,2 calibrator=mse $rot
    run threads=1 model=wav2vec2_kws $kws quant=w8a8 seed=0,1,2 $esc_w2v $rot
    run threads=1 model=wav2vec2_kws $kws quant=w8a8 seed=0 calibrator=mse ptq=rotation ;;
  keywords_bc_w8a8)  # wav2vec2 W8A8, guarded bias correction after MSE and after ESC (600 evaluations), and after
    # ESC whose start is bias-corrected too, so that its search scores candidates in the corrected model
    for model in wav2vec2_kws wav2vec2_kws_360_hp; do
      run threads=1 model=$model $kws quant=w8a8 seed=0,1,2 calibrator=mse ptq=bias_correction
      run threads=1 model=$model $kws quant=w8a8 seed=0,1,2 $esc_w2v ptq=bias_correction
      run threads=1 model=$model $kws quant=w8a8 seed=0,1,2 $esc_w2v calibrator.start_bias_correction=true \
          ptq=bias_correction
    done ;;
  keywords_log2)  # log2 softmax probabilities at 4-bit activations: MSE on both keyword models, ESC on AST
    run threads=1 model=ast_kws,wav2vec2_kws $kws quant=w8a4,w4a4_g64 calibrator=mse seed=0 "$log2"
    run threads=1 model=ast_kws $kws quant=w8a4,w4a4_g64 calibrator=mse seed=1,2 "$log2"
    run threads=1 model=ast_kws $kws quant=w8a4,w4a4_g64 $esc_kws seed=0,1,2 "$log2" ;;
  keywords_esc)  # wav2vec2: ESC's budget curve, 512 calibration clips (validation on 8 batches) against 128, and
    # CMA-ES's own seed spread
    # in a folder of its own: budget_curve is not part of a run's identity, so beside `keywords` it would be skipped
    python -m esc.run -m logger=csv out_dir="$out/budget_curve" threads=1 model=wav2vec2_kws $kws quant=w8a4,w8a8 \
        seed=0 $esc_w2v 'budget_curve=[0,50,100,150,300,450,600]'
    # 512 clips, CMA-ES's sampling seed following the run's (calibrator=esc, not $esc: seed 0 is the same run either
    # way); W8A4 also with guarded bias correction after the calibrator
    kws512="model=wav2vec2_kws $kws_data dataset.calibration_size=512"
    run threads=1 $kws512 calibrator=mse quant=w8a4 seed=0,1,2,3,4
    run threads=1 $kws512 calibrator=mse quant=w8a8 seed=0,1,2,3,4
    run threads=1 $kws512 $esc512 quant=w8a4 seed=0,1,2,3,4
    run threads=1 $kws512 $esc512 quant=w8a8 seed=0,1,2,3,4
    run threads=1 $kws512 $esc512 calibrator.fitness=task_loss quant=w8a8 seed=0,1,2  # the labels' loss as fitness
    run threads=1 $kws512 calibrator=mse quant=w8a4 seed=0,1,2,3,4 ptq=bias_correction
    run threads=1 $kws512 $esc512 quant=w8a4 seed=0,1,2,3,4 ptq=bias_correction
    run threads=1 $kws512 $esc512 calibrator.start_bias_correction=true quant=w8a4 seed=0,1,2,3,4 ptq=bias_correction
    # how much CMA-ES's own sampling spreads: one calibration draw (seed 0), three sampling seeds
    run threads=1 model=ast_kws $kws quant=w8a4 seed=0 calibrator=esc calibrator.seed=0,1,2 \
        calibrator.validation_batches=2 calibrator.population_batch=true
    run threads=1 model=wav2vec2_kws $kws quant=w8a4 seed=0 calibrator=esc calibrator.seed=0,1,2 \
        calibrator.validation_batches=2 calibrator.max_evals=600 ;;
  keywords_ptq)  # PTQ stages x {MSE, ESC} at W4A8 and W4A4 on the keyword models
    run threads=1 model=ast_kws $kws quant=w4a4_g64,w4a8_g64 calibrator=mse \
        ptq=gptq,smoothquant,rotation,adaround,smoothquant+gptq,rotation+gptq
    run threads=1 model=ast_kws $kws quant=w4a4_g64,w4a8_g64 $esc_kws \
        ptq=gptq,smoothquant,rotation,adaround,smoothquant+gptq,rotation+gptq
    run threads=1 model=wav2vec2_kws $kws quant=w4a4_g64,w4a8_g64 calibrator=mse \
        ptq=gptq,smoothquant+gptq,smoothquant,rotation,adaround,rotation+gptq
    run threads=1 model=wav2vec2_kws $kws quant=w4a4_g64,w4a8_g64 $esc_w2v \
        ptq=gptq,smoothquant+gptq,smoothquant,rotation,adaround,rotation+gptq ;;
  keywords_bc)  # bias correction after every calibrator (wav2vec2 W8A8/W8A4), PTQ chains with ESC at 4 bits (AST)
    run threads=1 model=wav2vec2_kws $kws quant=w8a8 calibrator=minmax,percentile,mse ptq=none,bias_correction \
        seed=0,1,2
    run threads=1 model=wav2vec2_kws $kws quant=w8a8 seed=0,1,2 $esc calibrator.validation_batches=2 \
        calibrator.max_evals=150 ptq=bias_correction
    run threads=1 model=wav2vec2_kws $kws quant=w8a4 calibrator=mse,percentile ptq=bias_correction seed=0,1,2
    # the same corrections without the guard (every layer corrected), for the comparison in RESULTS.md
    run threads=1 model=wav2vec2_kws $kws quant=w8a8 calibrator=minmax,percentile,mse ptq=bias_correction \
        ptq.stages.0.guard=false seed=0,1,2
    run threads=1 model=wav2vec2_kws $kws quant=w8a4 seed=0,1,2 $esc calibrator.validation_batches=2 \
        calibrator.max_evals=150 ptq=bias_correction
    run threads=1 model=wav2vec2_kws $kws quant=w8a4 seed=0,1,2 $esc_w2v ptq=bias_correction
    chains=smoothquant+gptq,rotation+gptq,smoothquant+gptq+bias_correction,rotation+gptq+bias_correction
    run threads=1 model=ast_kws $kws quant=w4a4_g64 $esc_kws ptq=$chains seed=0,1,2
    run threads=1 model=ast_kws $kws quant=w4a4_g64,w4a8_g64 calibrator=mse ptq=gptq,adaround,$chains
    run threads=1 model=ast_kws $kws quant=w4a4_g64,w4a8_g64 $esc_kws ptq=gptq,adaround
    run threads=1 model=ast_kws $kws quant=w4a8_g64 $esc_kws ptq=smoothquant+gptq,rotation+gptq ;;
  whisper_bc)  # Whisper tiny.en (bundled data): bias correction, and the GPTQ chains re-measured against true FP
    run threads=2 quant=w8a8 calibrator=mse ptq=bias_correction
    run threads=2 quant=w8a8 $esc calibrator.max_evals=150 ptq=bias_correction
    run threads=2 quant=w4a8_g64,w4a4_g64 calibrator=mse ptq=gptq,rotation+gptq
    run threads=2 quant=w4a8_g64 $esc calibrator.max_evals=150 ptq=rotation+gptq
    run threads=2 quant=w4a8_g64 calibrator=mse ptq=rotation+gptq+bias_correction ;;
  sensitivity)  # which quantizer groups cost the fidelity: wav2vec2 at W8A8, Whisper at W8A4
    python -m esc.sensitivity out_dir="$out" threads=2 logger=csv model=wav2vec2_kws $kws quant=w8a8 \
        calibrator=mse eval_batches=8
    python -m esc.sensitivity out_dir="$out" threads=2 logger=csv quant=w8a4 calibrator=mse eval_batches=1
    # one group per feature-encoder convolution input, on the 360-clip checkpoints
    conv_inputs='groups=["*conv_layers.0.conv.input_quantizer","*conv_layers.1.conv.input_quantizer",'
    conv_inputs+='"*conv_layers.2.conv.input_quantizer","*conv_layers.3.conv.input_quantizer",'
    conv_inputs+='"*conv_layers.4.conv.input_quantizer"]'
    for model in wav2vec2_kws_360 wav2vec2_kws_360_hp; do
      python -m esc.sensitivity out_dir="$out" threads=1 logger=csv model=$model $kws quant=w8a8 calibrator=mse \
          eval_batches=8 "$conv_inputs"
    done ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
