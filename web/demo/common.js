// shared demo code
