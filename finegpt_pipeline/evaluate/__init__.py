"""The evaluate stage: a checkpoint scored on the val split (evaluator) against baselines
(unigram), rendered as the eval report (render), set beside earlier runs (history) and the plan
(plan_vs_run), registered in MLflow (registry) and promoted (champion); sample generates text."""
