"""The calibration run: strategies searched on train/val, the winner judged once on test, the record and its review."""
