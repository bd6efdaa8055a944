"""SageMaker Clarify bias metrics, locally: pre-training (stage `bias`) and post-training (stage
`evaluate`), written in Clarify's analysis.json layout.

- `pretraining`: CI, DPL, KL, JS, LP, TVD, KS, CDDL and `pre_training_report(frame, bias_params)`
- `posttraining`: DPPL, DI, DCA, DCR, RD, SD, DAR, DRR, AD, CDDPL, TE, GE and
  `post_training_report(frame, bias_params)`
- `clarify_report`: the analysis.json layout; `report`: plots and the HTML page
"""

from reviewpipe.bias.posttraining import post_training_report
from reviewpipe.bias.pretraining import BiasMetricError, pre_training_report

__all__ = ["BiasMetricError", "post_training_report", "pre_training_report"]
