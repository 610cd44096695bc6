"""The calibrated judge as a reward, wherever the policy is trained: the terms and their fusion (`terms`), the gate it
must pass (`gate`), the judge it grades with (`judge`), in-process callables for TRL and verl (`functions`), the HTTP
service (`service`) and the log of what it graded (`log`)."""
