"""The planner: offers x nodes x TP x DP x PP -> vLLM rules + memory -> ranked plans.

Pure: it takes a model, a scheme and a list of offers and returns a QuoteResult. The phases,
one module each:

- shape_rules: vLLM's start-up rules on a layout; which GPUs have kernels for a format
- shapes: one shape on one hardware class (GPU, count, memory, link): feasible or why not
- estimates: the speed and price of a candidate (tokens/s, SLOs, availability, $/Mtok)
- candidates: phase 1, enumerate shapes per hardware class, one Candidate per offer and market
- ranking: phase 2, order them (folded into distinct choices when asked), build the plans shown
- ranked_plan: a RankedPlan and its JSON; result: QuoteResult and the `--json` document
- quote: plan_quote, which runs the phases

Offers are grouped into hardware classes so the memory model runs once per class and shape, not
once per region; prices are applied to every offer of the class afterwards. Only the plans
returned are built.
"""

from provisioner.core.planner.quote import plan_quote
from provisioner.core.planner.ranked_plan import RankedPlan
from provisioner.core.planner.result import QuoteResult, result_to_json

__all__ = ["QuoteResult", "RankedPlan", "plan_quote", "result_to_json"]
