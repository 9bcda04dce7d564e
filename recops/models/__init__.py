"""Recommenders behind one interface: SASRec, matrix factorisation, popularity."""
