// built SDK
