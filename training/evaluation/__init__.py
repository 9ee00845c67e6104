"""The evaluation harness: captures -> splits -> every detector -> flow- and window-level metrics -> report."""
