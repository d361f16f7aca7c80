"""Front ends of yolov7-studio (Gradio studio, Streamlit dashboard, FiftyOne bridge); thin layers over ``core``."""
