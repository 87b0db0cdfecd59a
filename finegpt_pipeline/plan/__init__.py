"""The plan stage: size a model, batch and schedule to the hardware and the data (planner),
from candidate shapes (shapes), cost estimates (costs), measured step times (calibrate) and
what the bins hold (inputs); check claims about the run (claims), forecast its loss
(loss_forecast) and report the requirements (report)."""
