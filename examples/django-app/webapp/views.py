from django.http import HttpResponse

MESSAGE = "hello from django"


def index(request):
    return HttpResponse(MESSAGE + "\n", content_type="text/plain")
