"""The attacks' implementation modules (private: import the public names from
``robustjax.attacks``)."""
