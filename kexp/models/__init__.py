"""Model builders other Keras projects can import.

Every builder is a plain function: shapes and hyperparameters in, a named
`keras.Model` out.
"""
