"""3-D thorax phantom and PA / left-lateral projection renderer."""
