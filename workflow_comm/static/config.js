// Names and bounds from the server (workflow_comm/names.py), written into the page as JSON.
export const config = JSON.parse(document.getElementById("dashboard-config").textContent);
